package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/checkout-demo/checkout/internal/telemetry"
)

// The outcome of one call to the order service.
type outcome int

const (
	// answered: the order service answered; its answer is the truth.
	answered outcome = iota
	// notSent: certainly nothing reached the order service (the connection
	// was refused, the breaker is open), so nothing was written.
	notSent
	// unknown: the request may have reached the order service and been
	// carried out (the connection dropped after it was written, no answer
	// in time, or the order service itself could not tell).
	unknown
)

var (
	// errUpstreamFailing marks an answer that counts as a failure for the
	// breaker (the order service could not do the work) while the answer
	// itself is still relayed.
	errUpstreamFailing = errors.New("order service answered with a failure")
	// errClientGone is a call the client abandoned: not the order
	// service's fault, so the breaker does not count it.
	errClientGone = errors.New("the client went away")
	// errQuickRefusal marks an answer that is a prompt, certain refusal
	// (the order service's 503: its database is away, nothing written).
	// It costs the client no wait, so the breaker does not count it.
	errQuickRefusal = errors.New("order service refused at once")
)

// excluded tells the failures the breaker does not count: they fail fast
// already (a refused connection, a prompt 503) or are the client's doing.
// The breaker is there for the slow failures: timeouts, dropped answers.
func excluded(err error) bool {
	return errors.Is(err, errClientGone) || errors.Is(err, errQuickRefusal) || neverSent(err)
}

// orderClient calls the order service through a circuit breaker: when the
// order service keeps timing out or dropping answers, the breaker opens and
// calls fail at once (503) instead of each waiting for its timeout; after
// BREAKER_OPEN_TIMEOUT it lets one call through (half-open) to find out
// whether the service is back.
type orderClient struct {
	log     *slog.Logger
	cfg     Config
	client  *http.Client
	breaker *gobreaker.CircuitBreaker[*http.Response]
}

func newOrderClient(log *slog.Logger, metrics *telemetry.Metrics, cfg Config, client *http.Client) *orderClient {
	if cfg.UpstreamAttempts <= 0 {
		cfg.UpstreamAttempts = 3
	}
	if cfg.BreakerFailures <= 0 {
		cfg.BreakerFailures = 5
	}
	if cfg.BreakerOpenTimeout <= 0 {
		cfg.BreakerOpenTimeout = 5 * time.Second
	}
	failures := uint32(cfg.BreakerFailures)
	metrics.BreakerState("order-service", telemetry.BreakerClosed)
	return &orderClient{log: log, cfg: cfg, client: client,
		breaker: gobreaker.NewCircuitBreaker[*http.Response](gobreaker.Settings{
			Name:        "order-service",
			MaxRequests: 1,
			Timeout:     cfg.BreakerOpenTimeout,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
			IsExcluded:  excluded,
			OnStateChange: func(name string, from, to gobreaker.State) {
				log.Warn("circuit breaker changed state", "upstream", name, "from", from.String(), "to", to.String())
				metrics.BreakerState(name, int(to))
			},
		})}
}

// State is the breaker's state: "closed", "half-open" or "open".
func (c *orderClient) State() string { return c.breaker.State().String() }

// call makes one attempt, bounded by UPSTREAM_TIMEOUT. The response, when
// there is one, is the caller's to close.
func (c *orderClient) call(ctx context.Context, method, url string, body []byte, header http.Header) (*http.Response, outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.UpstreamTimeout)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		cancel()
		return nil, notSent, err
	}
	req.Header = header
	resp, err := c.breaker.Execute(func() (*http.Response, error) {
		resp, err := c.client.Do(req)
		switch {
		case err != nil && ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
			return nil, errClientGone
		case err != nil:
			return nil, err
		case resp.StatusCode == http.StatusServiceUnavailable:
			return resp, errQuickRefusal
		case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout:
			return resp, errUpstreamFailing
		}
		return resp, nil
	})
	if resp != nil {
		// The body is read after call returns: cancel when it is closed.
		resp.Body = cancelOnClose{resp.Body, cancel}
	} else {
		cancel()
	}
	switch {
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return nil, notSent, err
	case resp != nil && resp.StatusCode == http.StatusGatewayTimeout:
		// The order service's own "outcome unknown" (its database did not
		// answer after the statement was sent).
		return resp, unknown, nil
	case resp != nil:
		return resp, answered, nil
	case neverSent(err):
		return nil, notSent, err
	}
	return nil, unknown, err
}

// neverSent reports whether a transport error came before the request
// left: the connection could not be made.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// retryDelay is the pause before attempt n+1 (n from 1): 50 ms, 100 ms, …
func retryDelay(n int) time.Duration { return 50 * time.Millisecond << min(n-1, 5) }
