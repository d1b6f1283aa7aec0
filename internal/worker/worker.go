// Package worker runs what the order and payment services (and the email
// service's consumer) do besides answering requests: the broker connection,
// the database preparation, the outbox relay and the consumer, started and
// stopped in the order a graceful shutdown needs, and the dlq subcommand.
package worker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/go-chi/chi/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/outbox"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/telemetry/amqptel"
	"github.com/checkout-demo/checkout/internal/web"
)

// HandleAbout answers GET / for a service that consumes and publishes:
// its events come from events.Topology by the contract's naming (a
// service's queues are named "<service>.…", the routing keys it publishes
// "<service>.<aggregate>.<what happened>").
func HandleAbout(service string, routes chi.Routes) http.Handler {
	var consumes []web.Consumed
	var publishes []string
	for _, q := range events.Topology {
		if strings.HasPrefix(q.Name, service+".") {
			consumes = append(consumes, web.Consumed{Queue: q.Name, RoutingKeys: q.Bindings})
		}
		for _, key := range q.Bindings {
			if strings.HasPrefix(key, service+".") && !slices.Contains(publishes, key) {
				publishes = append(publishes, key)
			}
		}
	}
	slices.Sort(publishes)
	return web.HandleAbout(service, routes, nil, consumes, publishes)
}

// DeadLetters is the `dlq` subcommand for the service's queue:
//
//	<service> dlq list [-n 20]     show what is in the service's dead-letter queue
//	<service> dlq replay [-n N]    move messages back onto the service's queue
func DeadLetters(amqpURL, queue string) web.Command {
	return web.Command{Name: "dlq", Run: func(ctx context.Context, args []string) error {
		// A replay's new trace is exported when OTEL_* say so.
		shutdown, err := telemetry.Setup(ctx, "dlq")
		if err != nil {
			return err
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = shutdown(ctx)
		}()
		return deadLetters(ctx, args, amqpURL, queue, os.Stdout)
	}}
}

// deadLetters runs `dlq list|replay` with args, writing to w.
func deadLetters(ctx context.Context, args []string, amqpURL, queue string, w io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		return errors.New("usage: dlq list [-n 20] | dlq replay [-n N]")
	}
	flags := flag.NewFlagSet("dlq "+args[0], flag.ContinueOnError)
	n := flags.Int("n", map[string]int{"list": 20, "replay": 1 << 30}[args[0]], "how many messages at most")
	if err := flags.Parse(args[1:]); err != nil {
		return err
	}
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Heartbeat: 10 * time.Second, Locale: "en_US"})
	if err != nil {
		return fmt.Errorf("connect to rabbitmq: %w", err)
	}
	defer conn.Close()
	if args[0] == "replay" {
		moved, err := events.ReplayDeadLetters(ctx, conn, queue, *n)
		fmt.Fprintf(w, "replayed %d message(s) from %s to %s\n", moved, events.DeadLetterQueue(queue), queue)
		return err
	}
	dls, total, err := events.ListDeadLetters(ctx, conn, queue, *n)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: %d message(s)\n", events.DeadLetterQueue(queue), total)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT ID\tTYPE\tROUTING KEY\tATTEMPTS\tFAILED AT\tREASON")
	for _, d := range dls {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", d.EventID, d.Type, d.RoutingKey, d.Attempts, d.FailedAt, d.Reason)
	}
	return tw.Flush()
}

// Background is a service's work besides requests. Every part but Log and
// Broker is optional.
type Background struct {
	Log        *slog.Logger
	Broker     *events.Broker
	DB         *postgres.DB
	Migrations fs.FS
	Relay      *outbox.Relay
	Consumer   *events.Consumer
	// FlushTimeout bounds the last outbox flush at shutdown.
	FlushTimeout time.Duration
	// Metrics, when set, gets the outbox's backlog (with a Relay and a DB)
	// and the depth of the consumer's dead-letter queue at each scrape.
	Metrics *telemetry.Metrics

	cancel                              context.CancelFunc // Start's context
	failure                             atomic.Pointer[error]
	stopBroker, stopRelay, stopConsumer context.CancelFunc
	brokerDone, relayDone, consumerDone chan struct{}
}

// Start starts the parts: the broker connection at once; the database
// preparation, then the relay; the consumer once the database is ready.
// They outlive ctx: Stop ends them. The context Start returns is ctx,
// cancelled when a part fails for good (a migration that does not apply,
// a role without the rights it needs): the service then shuts down and
// Err says why. An absent dependency is waited for, never such a failure.
func (b *Background) Start(ctx context.Context) context.Context {
	ctx, b.cancel = context.WithCancel(ctx)
	bg := context.WithoutCancel(ctx)
	var brokerCtx, relayCtx, consumerCtx context.Context
	brokerCtx, b.stopBroker = context.WithCancel(bg)
	relayCtx, b.stopRelay = context.WithCancel(bg)
	consumerCtx, b.stopConsumer = context.WithCancel(bg)
	b.brokerDone, b.relayDone, b.consumerDone = make(chan struct{}), make(chan struct{}), make(chan struct{})

	// Every service declares the whole topology on every connect, before
	// it publishes: whichever starts first, every event reaches every
	// queue that will ever consume it.
	b.Broker.Topology = events.Topology
	if b.Relay != nil && b.DB != nil {
		b.Metrics.RegisterOutbox(outbox.Stats(b.DB.Pool))
	}
	if b.Consumer != nil {
		b.Metrics.RegisterQueueDepths([]string{events.DeadLetterQueue(b.Consumer.Queue())}, amqptel.QueueDepth(b.Broker.Channel))
	}
	if b.Relay != nil {
		b.Broker.OnConnect(b.Relay.Wake)
	}
	go func() { defer close(b.brokerDone); b.Broker.Run(brokerCtx) }()
	go func() {
		defer close(b.relayDone)
		if b.DB == nil {
			return
		}
		if err := b.DB.Prepare(relayCtx, b.Migrations, b.Log); err != nil {
			if relayCtx.Err() == nil {
				b.failure.CompareAndSwap(nil, &err)
				b.cancel()
			}
			return
		}
		if b.Relay != nil {
			b.Relay.Run(relayCtx)
		}
	}()
	go func() {
		defer close(b.consumerDone)
		if b.Consumer == nil {
			return
		}
		if b.DB != nil {
			select {
			case <-b.DB.Prepared():
			case <-consumerCtx.Done():
				return
			}
		}
		b.Consumer.Run(consumerCtx)
	}()
	return ctx
}

// Result is what run returns after serving ended with err: the failure
// that ended the service, if one did, else err.
func (b *Background) Result(err error) error {
	if cause := b.Err(); cause != nil {
		return cause
	}
	return err
}

// Err is the failure that ended the service, or nil.
func (b *Background) Err() error {
	if err := b.failure.Load(); err != nil {
		return *err
	}
	return nil
}

// Stop ends the parts in the order that loses nothing: the consumer stops
// taking deliveries and finishes (and acks) those in flight; the relay
// finishes its batch; a last flush publishes what the last requests and
// handlers committed; then the broker connection closes.
func (b *Background) Stop() {
	b.stopConsumer()
	<-b.consumerDone
	b.stopRelay()
	<-b.relayDone
	if b.Relay != nil && b.DB != nil && b.DB.Ready() && b.Broker.Connected() {
		ctx, cancel := context.WithTimeout(context.Background(), b.FlushTimeout)
		defer cancel()
		if err := b.Relay.Flush(ctx); err != nil {
			b.Log.Warn("outbox not flushed; the next start publishes the rest", "err", err)
		}
	}
	b.stopBroker()
	<-b.brokerDone
	b.cancel()
	b.Log.Info("stopped")
}
