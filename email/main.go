// Command email is the email service: it mails the customer the order
// confirmation, the payment-failed notice or the cancellation notice and
// announces EmailSent (or EmailFailed when the mail is refused for good). It keeps
// no database; see the README for what that means for duplicates.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/internal/worker"
)

func main() {
	var cfg Config
	worker.Main("email", &cfg, &cfg.Port, &cfg.AMQPURL, Queue, func(ctx context.Context) error { return run(ctx, cfg, os.Stdout, nil) })
}

// run consumes payment results and cancelled orders until ctx is done, then stops taking
// deliveries and lets the mails in flight finish.
func run(ctx context.Context, cfg Config, stdout io.Writer, listening func(net.Addr)) error {
	svc, err := worker.Open(ctx, "email", stdout, worker.Settings{Port: cfg.Port, ListenHost: cfg.ListenHost,
		LogLevel: cfg.LogLevel, LogFormat: cfg.LogFormat, AMQPURL: cfg.AMQPURL, ShutdownTimeout: cfg.ShutdownTimeout,
		Prefetch: cfg.Prefetch, Concurrency: cfg.Concurrency, MaxAttempts: cfg.MaxAttempts,
		RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, HandlerTimeout: cfg.HandlerTimeout})
	if err != nil {
		return err
	}
	defer svc.Close()
	log := svc.Log
	mailer, err := NewMailer(cfg, log)
	if err != nil {
		return err
	}
	defer mailer.Close() // after the consumer stopped: the sessions it left idle

	// Records live an hour: a redelivery after a crash comes within
	// seconds, a dead letter replayed later was never sent.
	sent, err := openSentLog(cfg.EmailSentDir, time.Hour, time.Now())
	if err != nil {
		// Mails still go out; only a crash between the SMTP accept and the
		// ack can then send one twice, as without the record.
		log.Error("EMAIL_SENT_DIR unusable; the record of sent mails is kept in memory only", "dir", cfg.EmailSentDir, "err", err)
		sent, _ = openSentLog("", time.Hour, time.Now())
	}
	defer sent.Close()

	consumer := consume(svc, &mailHandler{log: log, mailer: mailer, broker: svc.Broker, pub: events.NewBatcher(svc.Publisher, cfg.PublishLinger), sent: sent,
		delay: cfg.EmailDelay, retryWindow: cfg.RetryWindow, metrics: svc.Metrics})
	ctx = svc.Start(ctx)
	defer svc.Stop()

	smtpAddr := net.JoinHostPort(cfg.SMTPHost, fmt.Sprint(cfg.SMTPPort))
	health := web.Health{
		Log:     log,
		Service: "email",
		Ready: map[string]web.Check{
			"rabbitmq": svc.Broker.Check,
			"consumer": consumer.Check,
			"smtp": func(ctx context.Context) error {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", smtpAddr)
				if err != nil {
					return fmt.Errorf("smtp %s unreachable", smtpAddr)
				}
				return c.Close()
			},
		},
		Stopping: svc.Stopping.Load,
	}
	r := chi.NewRouter()
	addRoutes(r, health)
	return svc.Serve(ctx, web.Observed(log, svc.Metrics, r), listening,
		"smtp", smtpAddr, "email_delay", cfg.EmailDelay.String(), "smtp_sessions", cfg.SMTPSessions)
}
