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
	"sync/atomic"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/outbox"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/internal/worker"
	"github.com/checkout-demo/checkout/order/migrations"
)

func main() {
	var cfg Config
	web.Main("order", &cfg,
		func(ctx context.Context) error { return run(ctx, cfg, os.Stdout, nil) },
		func() []web.Command {
			return []web.Command{web.HealthcheckCommand(cfg.Port), worker.DeadLetters(cfg.AMQPURL, SagaQueue)}
		})
}

// run starts the service and blocks until ctx is done, then shuts down in
// order: stop taking requests, finish those in flight, stop the consumer,
// flush the outbox, close the broker and the pool. listening, when not nil,
// is told the bound address (tests listen on port 0).
func run(ctx context.Context, cfg Config, stdout io.Writer, listening func(net.Addr)) error {
	log := web.NewLogger(stdout, cfg.LogLevel, cfg.LogFormat, "order")

	metrics, stopTelemetry, err := web.Telemetry(ctx, log, "order", cfg.ShutdownTimeout)
	if err != nil {
		return err
	}
	defer stopTelemetry()

	db, err := postgres.Open(cfg.DatabaseURL, cfg.DBMaxConns)
	if err != nil {
		return err
	}
	defer db.Close()
	store := &Store{pool: db.Pool, ready: db.Ready, timeout: cfg.RequestTimeout, metrics: metrics}
	if cfg.AccessTokenSecret != "" {
		if len(cfg.AccessTokenSecret) < 32 {
			return fmt.Errorf("ACCESS_TOKEN_SECRET must be at least 32 bytes")
		}
		store.key.key = []byte(cfg.AccessTokenSecret)
	}

	broker := events.NewBroker(cfg.AMQPURL, log)
	broker.Name = "order"
	pub := events.NewPublisher(broker)
	pub.Metrics = metrics
	defer pub.Close()
	relay := outbox.NewRelay(db.Pool, pub, log)
	relay.Poll, relay.Batch, relay.Linger, relay.CleanupInterval, relay.Retention, relay.InboxRetention = cfg.OutboxPoll, cfg.OutboxBatch, cfg.OutboxLinger, cfg.OutboxCleanup, cfg.OutboxRetention, cfg.InboxRetention
	consumer := events.NewConsumer(broker, events.ConsumerConfig{
		Queue: SagaQueue, Bindings: SagaBindings,
		Prefetch: cfg.Prefetch, Concurrency: cfg.Concurrency, MaxAttempts: cfg.MaxAttempts,
		RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, HandlerTimeout: cfg.HandlerTimeout, Metrics: metrics,
		Unavailable: postgres.IsTransient,
	}, handleSagaEvent(log, store, cfg.PaymentAMQPUser), log)

	bg := &worker.Background{Log: log, Broker: broker, DB: db, Migrations: migrations.FS,
		Relay: relay, Consumer: consumer, FlushTimeout: cfg.ShutdownTimeout, Metrics: metrics}
	ctx = bg.Start(ctx)
	defer bg.Stop()

	if cfg.PaymentTimeout <= 0 {
		cfg.PaymentTimeout = 3 * time.Minute
	}
	watch := &watcher{log: log, store: store, relay: relay, timeout: cfg.PaymentTimeout, tries: max(cfg.PaymentTries, 0)}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-db.Prepared():
			watch.run(watchCtx)
		case <-watchCtx.Done():
		}
	}()
	defer func() { stopWatch(); <-watched }()

	var stopping atomic.Bool
	health := web.Health{
		Log:     log,
		Service: "order",
		// Checkout needs only the database: while RabbitMQ is away orders
		// are still taken and their events wait in the outbox.
		Ready:    map[string]web.Check{"postgres": db.Ping},
		Extra:    map[string]web.Check{"rabbitmq": broker.Check, "consumer": consumer.Check},
		Stopping: stopping.Load,
	}
	return bg.Result(web.ListenAndServe(ctx, log, net.JoinHostPort(cfg.ListenHost, cfg.Port), NewServer(log, metrics, store, relay, health), cfg.ShutdownTimeout, &stopping, listening))
}
