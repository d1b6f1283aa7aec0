package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/smtp"
	"os"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The floor's minimal clients run as processes of their own (this program
// started again with floor-amqp or floor-smtp), so that their CPU is
// measured apart from the load generator's.

// floorTicks calls do(n) at rate per second for d, where n is how many
// units (per order) are due since the last call: a running total, so that
// fractional counts per order come out right on average.
func floorTicks(ctx context.Context, rate, perOrder float64, d time.Duration, do func(n int) error) error {
	if rate <= 0 || perOrder <= 0 {
		return nil
	}
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	end := time.Now().Add(d)
	orders, done := 0.0, 0
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		orders++
		due := int(orders*perOrder) - done
		if due > 0 {
			if err := do(due); err != nil {
				return err
			}
			done += due
		}
	}
	return nil
}

// floorFlags returns the flag set of the floor client name with the -rate
// (orders per second) and the -duration every client has.
func floorFlags(name string, out io.Writer) (fs *flag.FlagSet, rate *float64, d *time.Duration) {
	fs = flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	return fs, fs.Float64("rate", 80, "orders per second"), fs.Duration("duration", 10*time.Second, "how long")
}

// floorAMQP publishes persistent messages with confirms and consumes them
// with one ack each: publishes per order, and as many deliveries (a share
// of the messages goes to two queues, as the payment results do).
func floorAMQP(ctx context.Context, args []string, out io.Writer) error {
	fs, rate, d := floorFlags("floor-amqp", out)
	rawURL := fs.String("url", "amqp://guest:guest@localhost:5672/", "AMQP URL with the vhost")
	pubs, dels := fs.Float64("publishes", 3, "confirmed publishes per order"), fs.Float64("deliveries", 4, "deliveries (each acked) per order")
	queueType := fs.String("queue-type", "quorum", "the queues' x-queue-type: quorum, as the system's consumer queues are, or classic")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pubConn, err := amqp.Dial(*rawURL)
	if err != nil {
		return err
	}
	defer pubConn.Close()
	subConn, err := amqp.Dial(*rawURL)
	if err != nil {
		return err
	}
	defer subConn.Close()
	pub, err := pubConn.Channel()
	if err != nil {
		return err
	}
	name := fmt.Sprintf("loadtest.floor.%d", os.Getpid())
	// One queue gets every message, the other the fanned-out share.
	q1, q2 := name+".a", name+".b"
	err = errors.Join(
		pub.ExchangeDeclare(name, "direct", true, true, false, false, nil),
		declareBound(pub, q1, *queueType, name, "one", "two"),
		declareBound(pub, q2, *queueType, name, "two"),
		pub.Confirm(false),
	)
	if err != nil {
		return err
	}
	sub, err := subConn.Channel()
	if err != nil {
		return err
	}
	if err := sub.Qos(100, 0, false); err != nil {
		return err
	}
	acked := make(chan int, 1024)
	for _, q := range []string{q1, q2} {
		ds, err := sub.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			return err
		}
		go func() {
			for m := range ds {
				if m.Ack(false) == nil {
					acked <- 1
				}
			}
		}()
	}
	body := []byte(`{"event_id":"01a21699-053f-7ccd-9ceb-8d0a765d2e70","event_type":"PaymentProcessed","version":1,"occurred_at":"2026-01-01T00:00:00.000000Z","order_id":1234567,"payment_id":1234567,"user_email":"lt1234@example.com","amount":"1299.99"}`)
	fanShare := min(1, max(0, *dels / *pubs - 1)) // share of messages that go to both queues
	published, fanned, expect := 0, 0, 0
	err = floorTicks(ctx, *rate, *pubs, *d, func(n int) error {
		confirms := make([]*amqp.DeferredConfirmation, 0, n)
		for range n {
			key := "one"
			if int(float64(published+1)*fanShare) > fanned {
				key, fanned, expect = "two", fanned+1, expect+1
			}
			c, err := pub.PublishWithDeferredConfirmWithContext(ctx, name, key, true, false, amqp.Publishing{
				ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body, MessageId: fmt.Sprint(published),
			})
			if err != nil {
				return err
			}
			published, expect = published+1, expect+1
			confirms = append(confirms, c)
		}
		for _, c := range confirms {
			if ok, err := c.WaitContext(ctx); err != nil || !ok {
				return fmt.Errorf("publish not confirmed: %v", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Every message delivered and acked before the client ends.
	for got := 0; got < expect; got++ {
		select {
		case <-acked:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("floor-amqp: %d of %d deliveries acked", got, expect)
		}
	}
	fmt.Fprintf(out, "floor-amqp: %d publishes, %d deliveries acked (%s queues)\n", published, expect, *queueType)
	for _, q := range []string{q1, q2} {
		if _, err := pub.QueueDelete(q, false, false, false); err != nil {
			return err
		}
	}
	return nil
}

// declareBound declares the durable queue q of type queueType and binds it
// to exchange with keys. (A quorum queue cannot be auto-deleted: the floor
// deletes its queues at the end, and the vhost goes with the run.)
func declareBound(ch *amqp.Channel, q, queueType, exchange string, keys ...string) error {
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": queueType}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := ch.QueueBind(q, k, exchange, false, nil); err != nil {
			return err
		}
	}
	return nil
}

// floorSMTP sends one mail again and again over one SMTP session.
func floorSMTP(ctx context.Context, args []string, out io.Writer) error {
	fs, rate, d := floorFlags("floor-smtp", out)
	addr := fs.String("addr", "127.0.0.1:1026", "SMTP server")
	mails := fs.Float64("mails", 1, "mails per order")
	file := fs.String("message", "", "the raw message to send")
	if err := fs.Parse(args); err != nil {
		return err
	}
	msg, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	// SMTP wants CRLF line ends; DATA's writer turns bare LFs into CRLF.
	msg = []byte(strings.ReplaceAll(string(msg), "\r\n", "\n"))
	c, err := smtp.Dial(*addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("loadtest.local"); err != nil {
		return err
	}
	sent := 0
	err = floorTicks(ctx, *rate, *mails, *d, func(n int) error {
		for range n {
			if err := c.Mail("shop@checkout.local"); err != nil {
				return err
			}
			if err := c.Rcpt("lt1@example.com"); err != nil {
				return err
			}
			wc, err := c.Data()
			if err != nil {
				return err
			}
			if _, err := wc.Write(msg); err != nil {
				return err
			}
			if err := wc.Close(); err != nil {
				return err
			}
			sent++
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "floor-smtp: %d mails\n", sent)
	return c.Quit()
}
