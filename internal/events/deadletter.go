package events

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

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
		headers := amqp.Table{}
		for k, v := range d.Headers {
			headers[k] = v
		}
		replays, _ := headers["x-replayed"].(int32)
		headers["x-replayed"] = replays + 1
		headers[HeaderRoutingKey] = Delivery{Delivery: d}.EventRoutingKey()
		headers[HeaderPublishedBy] = publishedBy(d, self)
		delete(headers, HeaderAttempt)
		// A replay starts a new trace, linked to the one it failed in.
		rctx, span, headers := amqptel.StartReplay(ctx, queue, headers)
		err = republish(rctx, ch, queue, d, headers, self)
		telemetry.EndSpan(span, err)
		if err != nil {
			return moved, err
		}
		if err := d.Ack(false); err != nil {
			return moved, fmt.Errorf("ack %s: %w", d.MessageId, err)
		}
		moved++
	}
	return moved, nil
}

// republish puts d back on queue, published by user self (the validated
// user_id RabbitMQ checks against the connection).
func republish(ctx context.Context, ch *amqp.Channel, queue string, d amqp.Delivery, headers amqp.Table, self string) error {
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp.Publishing{
		Headers: headers, ContentType: d.ContentType, DeliveryMode: amqp.Persistent,
		MessageId: d.MessageId, Type: d.Type, Timestamp: d.Timestamp, AppId: d.AppId, UserId: self, Body: d.Body,
	})
	if err != nil {
		return fmt.Errorf("republish %s: %w", d.MessageId, err)
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		return fmt.Errorf("republish %s not confirmed: %v", d.MessageId, err)
	}
	return nil
}

// DeadLetterCommand runs the `dlq` subcommand a consuming service offers:
//
//	<service> dlq list [-n 20]     show what is in the service's dead-letter queue
//	<service> dlq replay [-n N]    move messages back onto the service's queue
func DeadLetterCommand(ctx context.Context, args []string, amqpURL, queue string, w io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		return errors.New("usage: dlq list [-n 20] | dlq replay [-n N]")
	}
	fs := flag.NewFlagSet("dlq "+args[0], flag.ContinueOnError)
	n := fs.Int("n", map[string]int{"list": 20, "replay": 1 << 30}[args[0]], "how many messages at most")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Heartbeat: 10 * time.Second, Locale: "en_US"})
	if err != nil {
		return fmt.Errorf("connect to rabbitmq: %w", err)
	}
	defer conn.Close()
	if args[0] == "replay" {
		moved, err := ReplayDeadLetters(ctx, conn, queue, *n)
		fmt.Fprintf(w, "replayed %d message(s) from %s to %s\n", moved, DeadLetterQueue(queue), queue)
		return err
	}
	dls, total, err := ListDeadLetters(ctx, conn, queue, *n)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: %d message(s)\n", DeadLetterQueue(queue), total)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT ID\tTYPE\tROUTING KEY\tATTEMPTS\tFAILED AT\tREASON")
	for _, d := range dls {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", d.EventID, d.Type, d.RoutingKey, d.Attempts, d.FailedAt, d.Reason)
	}
	return tw.Flush()
}
