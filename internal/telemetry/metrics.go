package telemetry

import (
	"context"
	"errors"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric this package defines.
const Namespace = "checkout"

// The values of the bounded labels.
const (
	// outcome of checkout_consumer_messages_total
	OutcomeHandled      = "handled"       // the handler succeeded and the message was acked
	OutcomeDuplicate    = "duplicate"     // the inbox had seen the event: acked without effect
	OutcomeRetried      = "retried"       // moved to a retry queue (also for an unavailable dependency)
	OutcomeDeadLettered = "dead_lettered" // moved to the dead-letter queue

	// result of checkout_publisher_confirms_total
	ConfirmAck      = "ack"      // the broker confirmed
	ConfirmNack     = "nack"     // the broker refused
	ConfirmReturned = "returned" // mandatory and unroutable: no queue bound
	ConfirmError    = "error"    // no answer: the channel closed or the wait timed out

	// outcome of checkout_saga_outcomes_total
	SagaPaid      = "paid"
	SagaDeclined  = "declined"
	SagaCancelled = "cancelled"
	SagaTimedOut  = "timed_out"
	SagaRefunded  = "refunded"

	// result of checkout_payment_provider_duration_seconds
	ProviderApproved = "approved"
	ProviderDeclined = "declined"
	ProviderError    = "error"

	// state values of checkout_circuit_breaker_state, gobreaker's numbering
	BreakerClosed   = 0
	BreakerHalfOpen = 1
	BreakerOpen     = 2
)

var sagaOutcomes = map[string]bool{SagaPaid: true, SagaDeclined: true, SagaCancelled: true, SagaTimedOut: true, SagaRefunded: true}

// Metrics are one service's Prometheus metrics, in a registry of their
// own (so that tests running several services in one process count each
// apart). Every method is safe on a nil *Metrics and then does nothing, so
// a component can hold an optional one.
type Metrics struct {
	reg *prometheus.Registry

	httpDuration     *prometheus.HistogramVec
	consumerMessages *prometheus.CounterVec
	handleDuration   *prometheus.HistogramVec
	confirms         *prometheus.CounterVec
	sagaOutcomes     *prometheus.CounterVec
	timeToMail       prometheus.Histogram
	smtpDuration     *prometheus.HistogramVec
	smtpFailures     *prometheus.CounterVec
	providerDuration *prometheus.HistogramVec
	breakerState     *prometheus.GaugeVec
}

// NewMetrics returns the metrics of a service, with the Go runtime and
// process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		reg: reg,
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to answer an HTTP request, by chi route pattern, method and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method", "status"}),
		consumerMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "consumer", Name: "messages_total",
			Help: "Deliveries a consumer finished with, by queue and outcome (handled, duplicate, retried, dead_lettered).",
		}, []string{"queue", "outcome"}),
		handleDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "consumer", Name: "handling_duration_seconds",
			Help:    "Time a handler took for one delivery, by queue, whatever its outcome.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"queue"}),
		confirms: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "publisher", Name: "confirms_total",
			Help: "Publishes by the broker's answer: ack, nack, returned (unroutable) or error (no answer).",
		}, []string{"result"}),
		sagaOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "saga", Name: "outcomes_total",
			Help: "Orders that reached an end of the payment saga: paid, declined, cancelled, timed_out, refunded.",
		}, []string{"outcome"}),
		timeToMail: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "saga", Name: "time_to_mail_seconds",
			Help:    "Time from an order's creation to its confirmation mail being sent, as the order service learns it.",
			Buckets: []float64{.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 30, 60, 120, 300, 900},
		}),
		smtpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "smtp", Name: "send_duration_seconds",
			Help:    "Time to hand one mail to the SMTP server, by result (ok, error).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"result"}),
		smtpFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "smtp", Name: "send_failures_total",
			Help: "Mails the SMTP server did not take, by reply class: 4xx (transient), 5xx (permanent), none (no reply: connection, TLS, timeout).",
		}, []string{"reply_class"}),
		providerDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "payment", Name: "provider_duration_seconds",
			Help:    "Latency of the payment provider's charge call, by result (approved, declined, error).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 1.5, 2, 3, 5, 10},
		}, []string{"result"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "circuit_breaker", Name: "state",
			Help: "State of a circuit breaker: 0 closed, 1 half-open, 2 open.",
		}, []string{"breaker"}),
	}
	reg.MustRegister(m.httpDuration, m.consumerMessages, m.handleDuration, m.confirms, m.sagaOutcomes, m.timeToMail,
		m.smtpDuration, m.smtpFailures, m.providerDuration, m.breakerState)
	return m
}

// Registry is where the metrics live, for a service that adds its own.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the metrics in the Prometheus text format (GET /metrics).
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// ObserveHTTP records one answered request. route is the chi route pattern
// ("unmatched" when nothing matched), so ids never become labels.
func (m *Metrics) ObserveHTTP(route, method string, status int, d time.Duration) {
	if m == nil {
		return
	}
	m.httpDuration.WithLabelValues(route, normalMethod(method), strconv.Itoa(status)).Observe(d.Seconds())
}

// ConsumerMessage records that a consumer of queue finished with a
// delivery after d: outcome is one of OutcomeHandled, OutcomeDuplicate,
// OutcomeRetried, OutcomeDeadLettered.
func (m *Metrics) ConsumerMessage(queue, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.consumerMessages.WithLabelValues(queue, outcome).Inc()
	if d > 0 {
		m.handleDuration.WithLabelValues(queue).Observe(d.Seconds())
	}
}

// PublishConfirm records the broker's answer to one publish: ConfirmAck,
// ConfirmNack, ConfirmReturned or ConfirmError.
func (m *Metrics) PublishConfirm(result string) {
	if m == nil {
		return
	}
	m.confirms.WithLabelValues(result).Inc()
}

// SagaOutcome records an order reaching an end of the saga (SagaPaid, …);
// anything else is counted as "other".
func (m *Metrics) SagaOutcome(outcome string) {
	if m == nil {
		return
	}
	if !sagaOutcomes[outcome] {
		outcome = "other"
	}
	m.sagaOutcomes.WithLabelValues(outcome).Inc()
}

// TimeToMail records how long after its creation an order's confirmation
// mail went out (the order service, on EmailSent: time.Since(created_at)).
func (m *Metrics) TimeToMail(d time.Duration) {
	if m == nil {
		return
	}
	m.timeToMail.Observe(d.Seconds())
}

// SMTPSend records one attempt to send a mail that took d and ended with
// err (nil when the server took it).
func (m *Metrics) SMTPSend(d time.Duration, err error) {
	if m == nil {
		return
	}
	if err == nil {
		m.smtpDuration.WithLabelValues("ok").Observe(d.Seconds())
		return
	}
	m.smtpDuration.WithLabelValues("error").Observe(d.Seconds())
	m.smtpFailures.WithLabelValues(SMTPReplyClass(err)).Inc()
}

// SMTPReplyClass says which class of SMTP reply err carries: "4xx", "5xx",
// or "none" when there was no reply (a connection, TLS or timeout error).
// It understands *textproto.Error (net/smtp) and any error with an
// ErrorCode() int method (go-mail's *mail.SendError).
func SMTPReplyClass(err error) string {
	code := 0
	var tp *textproto.Error
	var coded interface{ ErrorCode() int }
	switch {
	case errors.As(err, &tp):
		code = tp.Code
	case errors.As(err, &coded):
		code = coded.ErrorCode()
	}
	switch code / 100 {
	case 4:
		return "4xx"
	case 5:
		return "5xx"
	}
	return "none"
}

// ProviderCall records one call to the payment provider: result is
// ProviderApproved, ProviderDeclined or ProviderError.
func (m *Metrics) ProviderCall(result string, d time.Duration) {
	if m == nil {
		return
	}
	m.providerDuration.WithLabelValues(result).Observe(d.Seconds())
}

// BreakerState sets the state of the named circuit breaker (BreakerClosed,
// BreakerHalfOpen, BreakerOpen: gobreaker's State values, so
// int(to) from its OnStateChange fits).
func (m *Metrics) BreakerState(breaker string, state int) {
	if m == nil {
		return
	}
	m.breakerState.WithLabelValues(breaker).Set(float64(state))
}

// OutboxStats is what an outbox query reports: the rows not yet published
// and the age of the oldest of them (0 when there is none).
type OutboxStats struct {
	Pending   int64
	OldestAge time.Duration
}

// RegisterOutbox makes every scrape run query (with a 2 s timeout) and
// report checkout_outbox_pending_rows and
// checkout_outbox_oldest_pending_age_seconds, the relay's lag. When the
// query fails the two are left out of that scrape, and
// checkout_outbox_scrape_errors_total counts it.
func (m *Metrics) RegisterOutbox(query func(ctx context.Context) (OutboxStats, error)) {
	if m == nil {
		return
	}
	m.reg.MustRegister(&outboxCollector{
		query:   query,
		pending: prometheus.NewDesc(Namespace+"_outbox_pending_rows", "Outbox rows not yet published.", nil, nil),
		age:     prometheus.NewDesc(Namespace+"_outbox_oldest_pending_age_seconds", "Age of the oldest outbox row not yet marked published (0 when none): the relay's lag.", nil, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "outbox", Name: "scrape_errors_total",
			Help: "Scrapes in which the outbox could not be queried.",
		}),
	})
}

type outboxCollector struct {
	query        func(ctx context.Context) (OutboxStats, error)
	pending, age *prometheus.Desc
	errors       prometheus.Counter
}

func (c *outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.age
	c.errors.Describe(ch)
}

func (c *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := c.query(ctx)
	if err != nil {
		c.errors.Inc()
	} else {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(s.Pending))
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, s.OldestAge.Seconds())
	}
	c.errors.Collect(ch)
}

// RegisterQueueDepths makes every scrape report checkout_queue_messages
// (messages ready) for each of queues, as depth says (QueueDepth with a
// channel opener: passive declares). Register the service's dead-letter
// queues (and its main queue, if wanted); a queue whose depth cannot be
// read is left out of that scrape. Several replicas report the same
// queues: aggregate with max by (queue).
func (m *Metrics) RegisterQueueDepths(queues []string, depth func(ctx context.Context, queue string) (int, error)) {
	if m == nil {
		return
	}
	m.reg.MustRegister(&queueCollector{
		queues: queues,
		depth:  depth,
		desc:   prometheus.NewDesc(Namespace+"_queue_messages", "Messages ready in a queue the service owns (its dead-letter queues among them), by passive declare.", []string{"queue"}, nil),
	})
}

type queueCollector struct {
	queues []string
	depth  func(ctx context.Context, queue string) (int, error)
	desc   *prometheus.Desc
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, q := range c.queues {
		n, err := c.depth(ctx, q)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), q)
	}
}

func normalMethod(m string) string {
	switch m = strings.ToUpper(m); m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}
