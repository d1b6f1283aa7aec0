// Command order is the order service: it accepts checkouts from the gateway,
// writes each order and its OrderCreated event in one transaction, publishes
// the events through the outbox relay, and follows the payment saga.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/internal/worker"
	"github.com/checkout-demo/checkout/order/migrations"
)

func main() {
	var cfg Config
	worker.Main("order", &cfg, &cfg.Port, &cfg.AMQPURL, Queue, func(ctx context.Context) error { return run(ctx, cfg, os.Stdout, nil) })
}

// run starts the service and blocks until ctx is done, then shuts down in
// order: stop taking requests, finish those in flight, stop the watch and
// the consumer, flush the outbox, close the broker and the pool. listening,
// when not nil, is told the bound address (tests listen on port 0).
func run(ctx context.Context, cfg Config, stdout io.Writer, listening func(net.Addr)) error {
	svc, err := worker.Open(ctx, "order", stdout, worker.Settings{Port: cfg.Port, ListenHost: cfg.ListenHost,
		LogLevel: cfg.LogLevel, LogFormat: cfg.LogFormat, AMQPURL: cfg.AMQPURL, ShutdownTimeout: cfg.ShutdownTimeout,
		Prefetch: cfg.Prefetch, Concurrency: cfg.Concurrency, MaxAttempts: cfg.MaxAttempts,
		RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, HandlerTimeout: cfg.HandlerTimeout,
		DatabaseURL: cfg.DatabaseURL, DBMaxConns: cfg.DBMaxConns, Migrations: migrations.FS,
		OutboxPoll: cfg.OutboxPoll, OutboxBatch: cfg.OutboxBatch, OutboxLinger: cfg.OutboxLinger,
		OutboxCleanup: cfg.OutboxCleanup, OutboxRetention: cfg.OutboxRetention, InboxRetention: cfg.InboxRetention,
		Vacuum: []string{"orders"}})
	if err != nil {
		return err
	}
	defer svc.Close()
	store := &Store{pool: svc.DB.Pool, ready: svc.DB.Ready, timeout: cfg.RequestTimeout, metrics: svc.Metrics,
		linger: cfg.AdvanceLinger, callers: events.ConsumerConfig{Prefetch: cfg.Prefetch, Concurrency: cfg.Concurrency}.Handlers()}
	if cfg.AccessTokenSecret != "" {
		if len(cfg.AccessTokenSecret) < 32 {
			return fmt.Errorf("ACCESS_TOKEN_SECRET must be at least 32 bytes")
		}
		store.key.key = []byte(cfg.AccessTokenSecret)
	}
	consumer := consume(svc, store, cfg.PaymentAMQPUser)

	if cfg.PaymentTimeout <= 0 {
		cfg.PaymentTimeout = 3 * time.Minute
	}
	watch := &watcher{log: svc.Log, store: store, relay: svc.Relay, timeout: cfg.PaymentTimeout, tries: max(cfg.PaymentTries, 0)}
	svc.Checks = append(svc.Checks, store.checkIDBlock)
	svc.Loops = append(svc.Loops, watch.run)
	ctx = svc.Start(ctx)
	defer svc.Stop()

	health := web.Health{
		Log:     svc.Log,
		Service: "order",
		// Checkout needs only the database: while RabbitMQ is away orders
		// are still taken and their events wait in the outbox.
		Ready:    map[string]web.Check{"postgres": svc.DB.Ping},
		Extra:    map[string]web.Check{"rabbitmq": svc.Broker.Check, "consumer": consumer.Check},
		Stopping: svc.Stopping.Load,
	}
	return svc.Serve(ctx, NewServer(svc.Log, svc.Metrics, store, svc.Relay, health), listening)
}
