// Package worker builds and runs what the order, payment and email
// services do besides answering requests (Service): the broker connection,
// the database preparation, the outbox relay, the consumer and the loops
// that need the database, started and stopped in the order a graceful
// shutdown needs; and their main with the dlq subcommand.
package worker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-chi/chi/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/telemetry"
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

// Main is a consuming service's main: web.Main, with the healthcheck
// subcommand on *port and the dlq subcommand of queue at *amqpURL (read
// once cfg is).
func Main(service string, cfg any, port, amqpURL *string, queue string, run func(context.Context) error) {
	web.Main(service, cfg, run, func() []web.Command {
		return []web.Command{web.HealthcheckCommand(*port), DeadLetters(*amqpURL, queue)}
	})
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
