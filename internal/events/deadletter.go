package events

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/telemetry/amqptel"
)

// DeadLetter is one message in a dead-letter queue.
type DeadLetter struct {
	EventID    string
	Type       string
	RoutingKey string
	Attempts   int
	Reason     string
	FailedAt   string
	Body       []byte
}

// ListDeadLetters returns up to limit messages of queue's dead-letter queue
// without removing them: it takes them unacknowledged and hands them back.
func ListDeadLetters(ctx context.Context, conn *amqp.Connection, queue string, limit int) ([]DeadLetter, int, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, 0, fmt.Errorf("channel: %w", err)
	}
	defer ch.Close() // hands back everything taken below
	q, err := ch.QueueDeclarePassive(DeadLetterQueue(queue), true, false, false, false, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("dead-letter queue %s: %w", DeadLetterQueue(queue), err)
	}
	var out []DeadLetter
	for len(out) < limit && ctx.Err() == nil {
		d, ok, err := ch.Get(q.Name, false)
		if err != nil {
			return out, q.Messages, fmt.Errorf("get: %w", err)
		}
		if !ok {
			break
		}
		dl := DeadLetter{EventID: d.MessageId, Type: d.Type, RoutingKey: Delivery{Delivery: d}.EventRoutingKey(),
			Attempts: attemptOf(d.Headers), Body: d.Body}
		dl.Reason, _ = d.Headers[HeaderError].(string)
		dl.FailedAt, _ = d.Headers[HeaderFailedAt].(string)
		out = append(out, dl)
	}
	return out, q.Messages, nil
}

// ReplayDeadLetters moves up to max messages from queue's dead-letter queue
// back onto queue, with their attempt count reset, once the cause is fixed.
// Each message is acked in the dead-letter queue only after the broker
// confirmed its copy. It returns how many it moved.
func ReplayDeadLetters(ctx context.Context, conn *amqp.Connection, queue string, max int) (int, error) {
	ch, err := conn.Channel()
	if err != nil {
		return 0, fmt.Errorf("channel: %w", err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return 0, fmt.Errorf("confirm mode: %w", err)
	}
	if _, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil); err != nil {
		return 0, fmt.Errorf("queue %s: %w", queue, err)
	}
	// Replay what is there now, no more: a message that fails again for
	// good comes straight back and must not be replayed in a loop.
	dlq, err := ch.QueueDeclarePassive(DeadLetterQueue(queue), true, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("dead-letter queue %s: %w", DeadLetterQueue(queue), err)
	}
	max = min(max, dlq.Messages)
	self := connUser(conn)
	moved := 0
	for moved < max && ctx.Err() == nil {
		d, ok, err := ch.Get(DeadLetterQueue(queue), false)
		if err != nil {
			return moved, fmt.Errorf("get: %w", err)
		}
		if !ok {
			break
		}
		pub := republishing(d, self)
		h := pub.Headers
		replays, _ := h[HeaderReplayed].(int32)
		h[HeaderReplayed] = replays + 1
		h[HeaderRoutingKey] = Delivery{Delivery: d}.EventRoutingKey()
		h[HeaderPublishedBy] = publishedBy(d, self)
		delete(h, HeaderAttempt)
		// A replay starts a new trace, linked to the one it failed in.
		rctx, span, h := amqptel.StartReplay(ctx, queue, h)
		pub.Headers = h
		err = publishOne(rctx, ch, outgoing{key: queue, pub: pub})
		telemetry.EndSpan(span, err)
		if err != nil {
			return moved, fmt.Errorf("republish: %w", err)
		}
		if err := d.Ack(false); err != nil {
			return moved, fmt.Errorf("ack %s: %w", d.MessageId, err)
		}
		moved++
	}
	return moved, nil
}
