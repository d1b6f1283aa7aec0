// Command email is the email service: it mails the customer the order
// confirmation or the payment-failed notice and announces EmailSent. It keeps
// no database; see the README for what that means for duplicates.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/kelseyhightower/envconfig"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/web"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "config:", err)
		os.Exit(1)
	}
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(web.Healthcheck(cfg.Port))
	}
	if len(os.Args) > 1 && os.Args[1] == "dlq" {
		if err := events.DeadLetterCommand(ctx, os.Args[2:], cfg.AMQPURL, Queue, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "dlq:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, cfg, os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "email:", err)
		os.Exit(1)
	}
}

// run consumes payment results until ctx is done, then stops taking
// deliveries and lets the mails in flight finish.
func run(ctx context.Context, cfg Config, stdout io.Writer, listening func(net.Addr)) error {
	log := web.NewLogger(stdout, cfg.LogLevel, cfg.LogFormat, "email")
	mailer, err := NewMailer(cfg)
	if err != nil {
		return err
	}

	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	broker := events.NewBroker(cfg.AMQPURL, log)
	brokerDone := make(chan struct{})
	go func() { defer close(brokerDone); broker.Run(bgCtx) }()
	pub := events.NewPublisher(broker)
	defer pub.Close()

	consumer := events.NewConsumer(broker, events.ConsumerConfig{
		Queue: Queue, Bindings: []string{events.RoutePaymentProcessed, events.RoutePaymentFailed},
		Prefetch: cfg.Prefetch, Concurrency: cfg.Concurrency, MaxAttempts: cfg.MaxAttempts,
		RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, HandlerTimeout: cfg.HandlerTimeout,
		Unavailable: unavailable,
	}, handlePaymentResult(log, mailer, broker, pub, newSentCache(time.Hour), cfg.EmailDelay), log)
	consumerCtx, stopConsumer := context.WithCancel(bgCtx)
	defer stopConsumer()
	consumerDone := make(chan struct{})
	go func() { defer close(consumerDone); consumer.Run(consumerCtx) }()

	smtpAddr := net.JoinHostPort(cfg.SMTPHost, fmt.Sprint(cfg.SMTPPort))
	var stopping atomic.Bool
	health := web.Health{
		Service: "email",
		Ready: map[string]web.Check{
			"rabbitmq": broker.Check,
			"smtp": func(ctx context.Context) error {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", smtpAddr)
				if err != nil {
					return fmt.Errorf("smtp %s unreachable", smtpAddr)
				}
				return c.Close()
			},
		},
		Stopping: stopping.Load,
	}
	r := chi.NewRouter()
	r.Method(http.MethodGet, "/health", health.HandleHealth())
	r.Method(http.MethodGet, "/livez", health.HandleLivez())
	r.Method(http.MethodGet, "/readyz", health.HandleReadyz())

	ln, err := net.Listen("tcp", ":"+cfg.Port)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if listening != nil {
		listening(ln.Addr())
	}
	log.Info("listening", "addr", ln.Addr().String(), "smtp", smtpAddr, "email_delay", cfg.EmailDelay.String())
	serveErr := web.Serve(ctx, web.NewServer(web.Middleware(log, r), log), ln, cfg.ShutdownTimeout)
	stopping.Store(true)
	log.Info("shutting down")
	stopConsumer()
	<-consumerDone
	stopBackground()
	<-brokerDone
	log.Info("stopped")
	return serveErr
}
