package sidecar

import (
	"context"
	"sync"
	"time"
)

// The notifiers (webhooks, email) share two parts: following the gate's
// transitions, and a bounded queue per destination between that and the
// worker that delivers, so that a slow destination never holds the gate.

// Delivery defaults of the notifiers: a queue of 16 transitions, 5
// attempts, backoff from 1s doubling to 1m.
func deliveryDefaults(queueSize, maxAttempts *int, backoff, maxBackoff *time.Duration) {
	if *queueSize <= 0 {
		*queueSize = 16
	}
	if *maxAttempts <= 0 {
		*maxAttempts = 5
	}
	if *backoff <= 0 {
		*backoff = time.Second
	}
	if *maxBackoff <= 0 {
		*maxBackoff = time.Minute
	}
}

// followTransitions calls transition for every change of Ready after
// *from, in order, none skipped (a slow follower walks the Next chain),
// until ctx ends. It moves *from along as it goes: each State points to
// the next, so holding an old one would keep every state since in memory.
func followTransitions(ctx context.Context, from **State, transition func(*State)) {
	st := *from
	last := st.Ready
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.Changed():
			for n := st.Next(); n != nil; n = n.Next() {
				st = n
				if st.Ready != last {
					last = st.Ready
					transition(st)
				}
			}
			*from = st
		}
	}
}

// stateQueue is a bounded FIFO of transitions to deliver: when full, the
// oldest gives way to the newest (the latest state matters most).
type stateQueue struct {
	mu    sync.Mutex
	items []*State
	size  int
	wake  chan struct{}
}

func newStateQueue(size int) *stateQueue {
	return &stateQueue{size: size, wake: make(chan struct{}, 1)}
}

// push appends st; droppedOldest reports that the queue was full.
func (q *stateQueue) push(st *State) (droppedOldest bool) {
	q.mu.Lock()
	if len(q.items) >= q.size {
		q.items = q.items[1:]
		droppedOldest = true
	}
	q.items = append(q.items, st)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return droppedOldest
}

// next returns the oldest transition, waiting for one; nil once ctx ends.
func (q *stateQueue) next(ctx context.Context) *State {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			st := q.items[0]
			q.items = q.items[1:]
			q.mu.Unlock()
			return st
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-q.wake:
		}
	}
}

func (q *stateQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// clear empties the queue (at shutdown) and says how many it held.
func (q *stateQueue) clear() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.items)
	q.items = nil
	return n
}
