// Command payment is the payment service: it takes each OrderCreated, charges
// the order once through a (simulated) provider, and announces the result
// through its outbox.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/checkout-demo/checkout/internal/money"
	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/internal/worker"
	"github.com/checkout-demo/checkout/payment/migrations"
)

func main() {
	var cfg Config
	worker.Main("payment", &cfg, &cfg.Port, &cfg.AMQPURL, Queue, func(ctx context.Context) error { return run(ctx, cfg, os.Stdout, nil) })
}

// run starts the service and blocks until ctx is done, then stops taking
// deliveries, lets the running payments finish and acks them, flushes the
// outbox and closes everything.
func run(ctx context.Context, cfg Config, stdout io.Writer, listening func(net.Addr)) error {
	maxAmount, err := money.Parse(cfg.PaymentMaxAmount)
	if err != nil {
		return fmt.Errorf("PAYMENT_MAX_AMOUNT: %w", err)
	}
	if cfg.PaymentFailureRate < 0 || cfg.PaymentFailureRate > 1 {
		return fmt.Errorf("PAYMENT_FAILURE_RATE must be between 0 and 1, got %v", cfg.PaymentFailureRate)
	}
	svc, err := worker.Open(ctx, "payment", stdout, worker.Settings{Port: cfg.Port, ListenHost: cfg.ListenHost,
		LogLevel: cfg.LogLevel, LogFormat: cfg.LogFormat, AMQPURL: cfg.AMQPURL, ShutdownTimeout: cfg.ShutdownTimeout,
		Prefetch: cfg.Prefetch, Concurrency: cfg.Concurrency, MaxAttempts: cfg.MaxAttempts,
		RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, HandlerTimeout: cfg.HandlerTimeout,
		DatabaseURL: cfg.DatabaseURL, DBMaxConns: cfg.DBMaxConns, Migrations: migrations.FS,
		OutboxPoll: cfg.OutboxPoll, OutboxBatch: cfg.OutboxBatch, OutboxLinger: cfg.OutboxLinger,
		OutboxCleanup: cfg.OutboxCleanup, OutboxRetention: cfg.OutboxRetention, InboxRetention: cfg.InboxRetention,
		Vacuum: []string{"payments"}})
	if err != nil {
		return err
	}
	defer svc.Close()
	store := &Store{pool: svc.DB.Pool, ready: svc.DB.Ready}
	provider := Provider{Delay: cfg.PaymentDelay, MaxAmount: maxAmount, FailureRate: cfg.PaymentFailureRate, Ledger: svc.DB.Pool}
	c := &charger{log: svc.Log, store: store, provider: provider, relay: svc.Relay, metrics: svc.Metrics}
	consumer := consume(svc, c)
	// The reconciler finishes the charges a crash or a failing database
	// left between their intent and their result: at start, then every
	// PAYMENT_RECONCILE_INTERVAL. A payment younger than one handler
	// attempt may still be under way and is left to its handler.
	svc.Loops = append(svc.Loops, func(ctx context.Context) { c.reconcile(ctx, cfg.ReconcileInterval, cfg.HandlerTimeout) })
	ctx = svc.Start(ctx)
	defer svc.Stop()

	health := web.Health{
		Log:      svc.Log,
		Service:  "payment",
		Ready:    map[string]web.Check{"postgres": svc.DB.Ping, "rabbitmq": svc.Broker.Check, "consumer": consumer.Check},
		Stopping: svc.Stopping.Load,
	}
	return svc.Serve(ctx, NewServer(svc.Log, svc.Metrics, store, health), listening,
		"payment_delay", cfg.PaymentDelay.String(), "max_amount", maxAmount.String(), "failure_rate", cfg.PaymentFailureRate)
}
