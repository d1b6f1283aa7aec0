package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// CallTimeout bounds one AMQP call that takes no context (opening a
// channel, declaring, confirm mode) and one batch of publishes with its
// confirms when the caller's context has no earlier deadline.
const CallTimeout = 10 * time.Second

// bounded runs f, AMQP work on conn, and gives up when ctx's deadline or
// CallTimeout passes first: amqp091-go checks a context only before it
// writes and Channel() takes none, so a stalled socket would block f for as
// long as the kernel keeps the connection. On timeout the connection is
// closed (with a deadline already passed, so the close cannot block either),
// which fails f and tells the broker's supervisor to dial again. When ctx
// is cancelled without a deadline, bounded returns at once and leaves f to
// finish on its own.
func bounded(ctx context.Context, conn *amqp.Connection, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	deadline := time.Now().Add(CallTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
	case <-ctx.Done():
		if _, ok := ctx.Deadline(); !ok {
			return fmt.Errorf("%w: %w", ErrNotConnected, context.Cause(ctx))
		}
	}
	_ = conn.CloseDeadline(time.Now())
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	return fmt.Errorf("%w: no answer from rabbitmq in time; connection closed", ErrNotConnected)
}

// openChannel opens a channel on conn within ctx's deadline or CallTimeout.
func openChannel(ctx context.Context, conn *amqp.Connection) (*amqp.Channel, error) {
	var ch *amqp.Channel
	err := bounded(ctx, conn, func() error {
		var err error
		ch, err = conn.Channel()
		return err
	})
	if err != nil {
		return nil, err
	}
	return ch, nil
}

// isPreconditionFailed reports whether err is RabbitMQ's PRECONDITION_FAILED
// (406), e.g. a queue declared with other arguments than it exists with.
func isPreconditionFailed(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed
}

// Declare declares the exchange and, for each spec, the queue, its
// bindings, its retry queues and its dead-letter queue, on the consuming
// connection. It is idempotent and safe to call from every service at once.
//
// The queues are declared with MainQueueArgs and RetryQueueArgs (no
// dead-letter arguments: those come from Policies). Where a queue exists
// already with other arguments (a classic queue, or one with the dead-letter
// arguments of an earlier version), RabbitMQ refuses the declaration with
// PRECONDITION_FAILED: that queue is then used as it is, with a warning
// saying how to renew it, so an upgrade never stops a service.
func (b *Broker) Declare(ctx context.Context, specs ...QueueSpec) error {
	b.mu.Lock()
	conn := b.conn
	b.mu.Unlock()
	if conn == nil {
		return ErrNotConnected
	}
	return b.declareOn(ctx, conn, specs)
}

func (b *Broker) declareOn(ctx context.Context, conn *amqp.Connection, specs []QueueSpec) error {
	ch, err := openChannel(ctx, conn)
	if err != nil {
		return fmt.Errorf("declare: %w", err)
	}
	d := &declarer{ch: ch, reopen: conn.Channel, kept: b.warnKept}
	defer func() { _ = bounded(ctx, conn, d.ch.Close) }()
	for _, spec := range specs {
		if err := bounded(ctx, conn, func() error { return d.declare(spec) }); err != nil {
			return err
		}
	}
	return nil
}

func (b *Broker) warnKept(queue string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.kept == nil {
		b.kept = map[string]bool{}
	}
	if !b.kept[queue] {
		b.kept[queue] = true
		b.log.Warn("queue exists with other arguments than this version declares (a classic queue, or an earlier version's dead-letter arguments); using it as it is. To renew it, stop its consumers, let it drain and delete it (rabbitmqctl delete_queue "+queue+"); the next start declares it anew",
			"queue", queue)
	}
}

// A declarer declares queues on ch. When reopen is set, a queue that exists
// with other arguments is used as it is: kept is told, and the channel (closed
// by the refusal) is opened anew.
type declarer struct {
	ch     *amqp.Channel
	reopen func() (*amqp.Channel, error)
	kept   func(queue string)
}

func (d *declarer) queue(name string, args amqp.Table) error {
	_, err := d.ch.QueueDeclare(name, true, false, false, false, args)
	if !isPreconditionFailed(err) || d.reopen == nil {
		return err
	}
	d.kept(name)
	if d.ch, err = d.reopen(); err != nil {
		return err
	}
	_, err = d.ch.QueueDeclarePassive(name, true, false, false, false, nil)
	return err
}

// declare declares one consumer queue and what belongs to it.
func (d *declarer) declare(spec QueueSpec) error {
	if err := DeclareExchange(d.ch); err != nil {
		return fmt.Errorf("declare exchange: %w", err)
	}
	if err := d.queue(spec.Name, MainQueueArgs(spec.Name)); err != nil {
		return fmt.Errorf("declare queue %s: %w", spec.Name, err)
	}
	for _, key := range spec.Bindings {
		if err := d.ch.QueueBind(spec.Name, key, Exchange, false, nil); err != nil {
			return fmt.Errorf("bind %s to %s: %w", spec.Name, key, err)
		}
	}
	for retry := 1; retry <= RetryLevels; retry++ {
		if err := d.queue(RetryQueue(spec.Name, retry), RetryQueueArgs(spec.Name)); err != nil {
			return fmt.Errorf("declare retry queue: %w", err)
		}
	}
	if err := d.queue(DeadLetterQueue(spec.Name), nil); err != nil {
		return fmt.Errorf("declare dead-letter queue: %w", err)
	}
	return nil
}

// DeclareAll declares the exchange and the whole topology on ch as the
// services do at start (for tools and tests that hold a bare channel; a
// queue that exists with other arguments fails it).
func DeclareAll(ch *amqp.Channel) error {
	d := &declarer{ch: ch}
	for _, spec := range Topology {
		if err := d.declare(spec); err != nil {
			return err
		}
	}
	return nil
}
