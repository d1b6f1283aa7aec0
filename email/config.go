package main

import "time"

// Config is read from the environment (see the README's configuration table).
type Config struct {
	Port string `envconfig:"PORT" default:"8003"`
	// ListenHost is the address the HTTP server binds: loopback unless
	// opened (compose and Kubernetes set 0.0.0.0).
	ListenHost string `envconfig:"LISTEN_HOST" default:"127.0.0.1"`
	AMQPURL    string `envconfig:"AMQP_URL" default:"amqp://guest:guest@localhost:5672/"`

	SMTPHost     string        `envconfig:"SMTP_HOST" default:"localhost"`
	SMTPPort     int           `envconfig:"SMTP_PORT" default:"1026"`
	SMTPUsername string        `envconfig:"SMTP_USERNAME"`
	SMTPPassword string        `envconfig:"SMTP_PASSWORD"`
	SMTPTLS      string        `envconfig:"SMTP_TLS" default:"none"` // none, opportunistic or mandatory
	SMTPTimeout  time.Duration `envconfig:"SMTP_TIMEOUT" default:"10s"`
	EmailFrom    string        `envconfig:"EMAIL_FROM" default:"Checkout Shop <shop@checkout.local>"`
	// EmailDelay simulates slow mail rendering and delivery.
	EmailDelay time.Duration `envconfig:"EMAIL_DELAY" default:"2s"`
	// EmailSentDir keeps the record of mails sent across a crash (see
	// sentLog); empty keeps it in memory only.
	EmailSentDir string `envconfig:"EMAIL_SENT_DIR" default:"/tmp/checkout-email-sent"`
	// AcceptConcurrency is the most mails that may be between the end of
	// their data and their record at once: the most a crash can send
	// twice. The window opens beyond one mail only as far as the backlog
	// needs (see window).
	AcceptConcurrency int `envconfig:"EMAIL_ACCEPT_CONCURRENCY" default:"16"`
	// RetryWindow is how long a mail is retried after temporary refusals
	// (4xx) and connection trouble without using up attempts; past it the
	// mail is given up as if refused for good.
	RetryWindow time.Duration `envconfig:"EMAIL_RETRY_WINDOW" default:"15m"`
	// SMTPSessions is how many SMTP connections the service keeps and
	// reuses, one mail at a time each.
	SMTPSessions int `envconfig:"SMTP_SESSIONS" default:"16"`

	// PublishLinger is the least time between the starts of two batches
	// of EmailSent and EmailFailed publishes (events.Batcher.Linger):
	// after an idle spell an announce goes at once, while mails keep
	// going out they gather and share one confirm round trip.
	PublishLinger time.Duration `envconfig:"PUBLISH_LINGER" default:"50ms"`

	Prefetch       int           `envconfig:"CONSUMER_PREFETCH" default:"600"`
	Concurrency    int           `envconfig:"CONSUMER_CONCURRENCY" default:"600"`
	MaxAttempts    int           `envconfig:"CONSUMER_MAX_ATTEMPTS" default:"5"`
	RetryBase      time.Duration `envconfig:"CONSUMER_RETRY_BASE" default:"1s"`
	RetryMax       time.Duration `envconfig:"CONSUMER_RETRY_MAX" default:"30s"`
	HandlerTimeout time.Duration `envconfig:"CONSUMER_HANDLER_TIMEOUT" default:"30s"`

	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s"`
	LogFormat       string        `envconfig:"LOG_FORMAT" default:"json"`
	LogLevel        string        `envconfig:"LOG_LEVEL" default:"info"`
}
