// SPDX-License-Identifier: GPL-2.0
/*
 * deferqueue.c - work postponed to the end of checkpoint/restart (seed 002)
 *
 * Some work cannot be done where the need for it is found (restoring an
 * item that refers to an object not created yet, deleting an object that
 * must first be created and attached): it is queued and run once, in order,
 * when everything else is in place.  Not the kernel workqueue, which runs
 * "some time later" in any task; this runs exactly when the caller says.
 *
 * The RFC's two bugs are fixed here: the entry is sized sizeof(*dq) + size
 * (it sized a pointer), and it is list_add_tail(&dq->list, head) (the
 * arguments were reversed, which queued the head onto the entry).
 */
#include <linux/errno.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include "ckpt_core.h"

atomic_long_t ckpt_defers_live = ATOMIC_LONG_INIT(0);

struct ckpt_deferqueue {
	struct list_head list;
	ckpt_defer_fn_t fn;
	ckpt_defer_dtor_t dtor;
	char data[];
};

/**
 * ckpt_deferqueue_init - initialize an empty queue
 * @head: the queue
 */
void ckpt_deferqueue_init(struct ckpt_deferqueue_head *head)
{
	spin_lock_init(&head->lock);
	INIT_LIST_HEAD(&head->list);
	head->count = 0;
	head->max = CKPT_MAX_DEFERS_DEFAULT;
}

/**
 * ckpt_deferqueue_add - queue @fn(@data) to run at the end
 * @head: the queue
 * @fn: the work; it consumes the data, success or not
 * @dtor: releases the data of an entry that never ran (may be NULL)
 * @data: copied into the entry
 * @size: bytes of @data
 *
 * Return: 0, -ENOSPC when @head already holds its max entries, or -ENOMEM;
 * nothing is queued on failure.
 */
int ckpt_deferqueue_add(struct ckpt_deferqueue_head *head,
			ckpt_defer_fn_t fn, ckpt_defer_dtor_t dtor,
			const void *data, size_t size)
{
	struct ckpt_deferqueue *dq;

	/* read unlocked: the context serializes its adds under its mutex */
	if (head->count >= head->max)
		return -ENOSPC;
	dq = ckpt_fault() ? NULL :
		kmalloc(sizeof(*dq) + size, GFP_KERNEL_ACCOUNT);
	if (!dq)
		return -ENOMEM;
	dq->fn = fn;
	dq->dtor = dtor;
	memcpy(dq->data, data, size);
	atomic_long_inc(&ckpt_defers_live);

	spin_lock(&head->lock);
	list_add_tail(&dq->list, &head->list);
	head->count++;
	spin_unlock(&head->lock);
	return 0;
}

/* take the oldest entry off the queue, or NULL */
static struct ckpt_deferqueue *deferqueue_pop(struct ckpt_deferqueue_head *head)
{
	struct ckpt_deferqueue *dq;

	spin_lock(&head->lock);
	dq = list_first_entry_or_null(&head->list, struct ckpt_deferqueue,
				      list);
	if (dq) {
		list_del(&dq->list);
		head->count--;
	}
	spin_unlock(&head->lock);
	return dq;
}

static void deferqueue_kfree(struct ckpt_deferqueue *dq)
{
	kfree(dq);
	atomic_long_dec(&ckpt_defers_live);
}

/**
 * ckpt_deferqueue_run - run the queued work, oldest first
 * @head: the queue
 *
 * Each entry runs without the lock held (work may sleep or queue more).
 * The first failure stops the run: the entries after it stay queued.
 *
 * Return: the number of entries run, or the first error.
 */
int ckpt_deferqueue_run(struct ckpt_deferqueue_head *head)
{
	struct ckpt_deferqueue *dq;
	int nr = 0;
	int ret;

	while ((dq = deferqueue_pop(head))) {
		ret = dq->fn(dq->data);
		deferqueue_kfree(dq);
		if (ret < 0)
			return ret;
		nr++;
		cond_resched();
	}
	return nr;
}

/**
 * ckpt_deferqueue_destroy - drop unrun entries, releasing what they hold
 * @head: the queue; empty afterwards
 */
void ckpt_deferqueue_destroy(struct ckpt_deferqueue_head *head)
{
	struct ckpt_deferqueue *dq;

	while ((dq = deferqueue_pop(head))) {
		if (dq->dtor)
			dq->dtor(dq->data);
		deferqueue_kfree(dq);
		cond_resched();
	}
}
