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
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/internal/worker"
)

func main() {
	var cfg Config
	web.Main("email", &cfg,
		func(ctx context.Context) error { return run(ctx, cfg, os.Stdout, nil) },
		func() []web.Command {
			return []web.Command{web.HealthcheckCommand(cfg.Port), worker.DeadLetters(cfg.AMQPURL, Queue)}
		})
}

// run consumes payment results and cancelled orders until ctx is done, then stops taking
// deliveries and lets the mails in flight finish.
func run(ctx context.Context, cfg Config, stdout io.Writer, listening func(net.Addr)) error {
	log := web.NewLogger(stdout, cfg.LogLevel, cfg.LogFormat, "email")
	metrics, stopTelemetry, err := web.Telemetry(ctx, log, "email", cfg.ShutdownTimeout)
	if err != nil {
		return err
	}
	defer stopTelemetry()
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

	broker := events.NewBroker(cfg.AMQPURL, log)
	broker.Name = "email"
	pub := events.NewPublisher(broker)
	pub.Metrics = metrics
	defer pub.Close()
	h := &mailHandler{log: log, mailer: mailer, broker: broker, pub: events.NewBatcher(pub), sent: sent,
		delay: cfg.EmailDelay, retryWindow: cfg.RetryWindow, metrics: metrics}
	consumer := events.NewConsumer(broker, events.ConsumerConfig{
		Queue: Queue, Bindings: events.QueueBindings(Queue),
		Prefetch: cfg.Prefetch, Concurrency: cfg.Concurrency, MaxAttempts: cfg.MaxAttempts,
		RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, HandlerTimeout: cfg.HandlerTimeout, Metrics: metrics,
		Unavailable: unavailable,
	}, h.handle, log)
	bg := &worker.Background{Log: log, Broker: broker, Consumer: consumer, Metrics: metrics}
	ctx = bg.Start(ctx)
	defer bg.Stop()

	smtpAddr := net.JoinHostPort(cfg.SMTPHost, fmt.Sprint(cfg.SMTPPort))
	var stopping atomic.Bool
	health := web.Health{
		Log:     log,
		Service: "email",
		Ready: map[string]web.Check{
			"rabbitmq": broker.Check,
			"consumer": consumer.Check,
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
	r.Method(http.MethodGet, "/", worker.HandleAbout("email", r))
	r.Method(http.MethodGet, "/health", health.HandleHealth())
	r.Method(http.MethodGet, "/livez", health.HandleLivez())
	r.Method(http.MethodGet, "/readyz", health.HandleReadyz())
	return bg.Result(web.ListenAndServe(ctx, log, net.JoinHostPort(cfg.ListenHost, cfg.Port), web.Observed(log, metrics, r), cfg.ShutdownTimeout, &stopping, listening,
		"smtp", smtpAddr, "email_delay", cfg.EmailDelay.String(), "smtp_sessions", cfg.SMTPSessions))
}
