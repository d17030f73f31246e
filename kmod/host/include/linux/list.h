/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Host stand-in for <linux/list.h>: the list and hlist calls the core uses,
 * with the checks of the kernel's CONFIG_DEBUG_LIST (Debian's kernel has it)
 * so that a corrupted list aborts the host tests as it would report in dmesg.
 */
#ifndef _HOST_LINUX_LIST_H
#define _HOST_LINUX_LIST_H
#include <stdio.h>
#include <stdlib.h>
#include <linux/types.h>

#define LIST_POISON1 ((void *)0x100)
#define LIST_POISON2 ((void *)0x122)

#define host_list_bug(msg) \
	do { fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, msg); \
	     abort(); } while (0)

struct list_head {
	struct list_head *next, *prev;
};

struct hlist_head {
	struct hlist_node *first;
};

struct hlist_node {
	struct hlist_node *next, **pprev;
};

static inline void INIT_LIST_HEAD(struct list_head *list)
{
	list->next = list;
	list->prev = list;
}

static inline void list_add_tail(struct list_head *new, struct list_head *head)
{
	struct list_head *prev = head->prev;

	if (prev->next != head || new == head || new == prev)
		host_list_bug("list_add corruption");
	head->prev = new;
	new->next = head;
	new->prev = prev;
	prev->next = new;
}

static inline void list_del(struct list_head *entry)
{
	if (entry->next == LIST_POISON1 || entry->prev == LIST_POISON2 ||
	    entry->prev->next != entry || entry->next->prev != entry)
		host_list_bug("list_del corruption");
	entry->next->prev = entry->prev;
	entry->prev->next = entry->next;
	entry->next = LIST_POISON1;
	entry->prev = LIST_POISON2;
}

static inline int list_empty(const struct list_head *head)
{
	return head->next == head;
}

#define list_entry(ptr, type, member) container_of(ptr, type, member)
#define list_first_entry_or_null(head, type, member) \
	(list_empty(head) ? NULL : list_entry((head)->next, type, member))

#define INIT_HLIST_HEAD(ptr) ((ptr)->first = NULL)

static inline void INIT_HLIST_NODE(struct hlist_node *h)
{
	h->next = NULL;
	h->pprev = NULL;
}

static inline int hlist_unhashed(const struct hlist_node *h)
{
	return !h->pprev;
}

static inline void hlist_add_head(struct hlist_node *n, struct hlist_head *h)
{
	struct hlist_node *first = h->first;

	n->next = first;
	if (first)
		first->pprev = &n->next;
	h->first = n;
	n->pprev = &h->first;
}

static inline void __hlist_del(struct hlist_node *n)
{
	struct hlist_node *next = n->next;
	struct hlist_node **pprev = n->pprev;

	if (n->pprev == LIST_POISON2 || *pprev != n ||
	    (next && next->pprev != &n->next))
		host_list_bug("hlist_del corruption");
	*pprev = next;
	if (next)
		next->pprev = pprev;
}

static inline void hlist_del(struct hlist_node *n)
{
	__hlist_del(n);
	n->next = LIST_POISON1;
	n->pprev = LIST_POISON2;
}

static inline void hlist_del_init(struct hlist_node *n)
{
	if (!hlist_unhashed(n)) {
		__hlist_del(n);
		INIT_HLIST_NODE(n);
	}
}

#define hlist_entry_safe(ptr, type, member) \
	({ typeof(ptr) ____ptr = (ptr); \
	   ____ptr ? container_of(____ptr, type, member) : NULL; })

#define hlist_for_each_entry(pos, head, member) \
	for (pos = hlist_entry_safe((head)->first, typeof(*(pos)), member); \
	     pos; \
	     pos = hlist_entry_safe((pos)->member.next, typeof(*(pos)), member))

#define hlist_for_each_entry_safe(pos, n, head, member) \
	for (pos = hlist_entry_safe((head)->first, typeof(*pos), member); \
	     pos && ({ n = pos->member.next; 1; }); \
	     pos = hlist_entry_safe(n, typeof(*pos), member))
#endif
