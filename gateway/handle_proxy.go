package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/sony/gobreaker/v2"

	"github.com/checkout-demo/checkout/internal/web"
)

// maxBody is the largest checkout body the gateway forwards.
const maxBody = 1 << 20

// IdempotencyKeyHeader makes a checkout safe to retry: the order service
// returns the order a key created before instead of placing another.
const IdempotencyKeyHeader = "Idempotency-Key"

// handleCheckout forwards a checkout exactly once. Every checkout carries an
// idempotency key, the client's or one made here, so that a call whose
// outcome is unknown (the connection dropped after the request was
// written, no answer in time) can be retried without placing a second
// order; the client gets the one real answer.
func handleCheckout(log *slog.Logger, orders *orderClient) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				web.WriteProblem(w, r, http.StatusRequestEntityTooLarge, "request body exceeds 1 MiB")
				return
			}
			web.WriteProblem(w, r, http.StatusBadRequest, "could not read the request body")
			return
		}
		header := upstreamHeader(r)
		if _, sent := r.Header[IdempotencyKeyHeader]; !sent {
			// The key is the client's to retry with when even our retries
			// leave the outcome unknown.
			key := "gw-" + uuid.NewString()
			header.Set(IdempotencyKeyHeader, key)
			w.Header().Set(IdempotencyKeyHeader, key)
		}
		forward(w, r, log, orders, http.MethodPost, orders.cfg.OrderServiceURL+"/orders", body, header)
	})
}

func handleGetOrder(log *slog.Logger, orders *orderClient) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := web.OrderID(w, r, "id")
		if !ok {
			return
		}
		forward(w, r, log, orders, http.MethodGet, fmt.Sprintf("%s/orders/%d", orders.cfg.OrderServiceURL, id), nil, upstreamHeader(r))
	})
}

// upstreamHeader is what the order service gets of the client's headers:
// Authorization carries an order's access token, web.UserHeader the
// signed-in customer (set by guard only, removed from what clients send).
func upstreamHeader(r *http.Request) http.Header {
	h := http.Header{}
	for _, k := range []string{"Content-Type", "Accept", IdempotencyKeyHeader, "Authorization", web.UserHeader} {
		if v := r.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	h.Set(web.RequestIDHeader, web.RequestID(r.Context()))
	return h
}

// Details of the answers that are the gateway's own.
const (
	detailNotWritten = "the order service is unavailable; nothing was written; please retry"
	detailBreaker    = "the order service is failing; the gateway sends it no requests for a moment; nothing was written; please retry shortly"
	detailUnknown    = "the order service did not answer in time; the order may or may not have been placed: " +
		"retry with the same Idempotency-Key header (returned in this answer when you sent none) to get the order without placing it twice, " +
		"or look the order up before placing it again"
	detailReadFailed = "the order service did not answer in time; please retry"
)

// forward calls the order service and relays its answer. A call whose
// outcome is unknown is made again (with the same idempotency key, for a
// checkout) up to UPSTREAM_ATTEMPTS times; the client then gets 503 only
// when nothing was written for certain, and 504 when the outcome stayed
// unknown. Never a hang: each attempt is bounded by UPSTREAM_TIMEOUT, and
// the breaker answers at once while the order service keeps failing.
func forward(w http.ResponseWriter, r *http.Request, log *slog.Logger, orders *orderClient, method, url string, body []byte, header http.Header) {
	mayExist := false // an earlier attempt's outcome is unknown
	for attempt := 1; ; attempt++ {
		// Every attempt sends the same header: no RoundTripper of ours
		// changes a request's (telemetry.Transport clones before it adds
		// trace headers), so an attempt given up on only ever reads it.
		resp, out, err := orders.call(r.Context(), method, url, body, header)
		if r.Context().Err() != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return // the client went away
		}
		if out == answered && (!mayExist || resp.StatusCode < 500) {
			relay(w, r, log, resp)
			return
		}
		if out == unknown {
			mayExist = true
		}
		if resp != nil {
			resp.Body.Close()
		}
		if err == nil { // an answer that does not settle it (a 504, a 5xx after an unknown outcome)
			err = fmt.Errorf("the order service answered %s", resp.Status)
		}
		log.Warn("order service call failed", "request_id", web.RequestID(r.Context()), "err", err, "attempt", attempt, "outcome_unknown", out == unknown,
			"breaker", orders.State())
		if attempt < orders.cfg.UpstreamAttempts && !errors.Is(err, gobreaker.ErrOpenState) {
			select {
			case <-time.After(retryDelay(attempt)):
				continue
			case <-r.Context().Done():
				return
			}
		}
		switch {
		case method != http.MethodPost && mayExist:
			web.WriteProblem(w, r, http.StatusGatewayTimeout, detailReadFailed)
		case mayExist:
			web.WriteProblem(w, r, http.StatusGatewayTimeout, detailUnknown)
		case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
			w.Header().Set("Retry-After", strconv.Itoa(max(int(orders.cfg.BreakerOpenTimeout.Seconds()), 1)))
			web.WriteProblem(w, r, http.StatusServiceUnavailable, detailBreaker)
		default:
			web.WriteProblem(w, r, http.StatusServiceUnavailable, detailNotWritten)
		}
		return
	}
}

// relayBufs holds the buffers relay copies answers through. io.Copy would
// make a 32 KiB buffer per answer: the writer it is given (the
// middleware's status recorder) is not an io.ReaderFrom, and net/http's
// own ReadFrom would hand the body to the socket's, which makes one too.
// Answers are a few hundred bytes; the response's own buffer gathers them
// into one write.
var relayBufs = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}

// relay copies the order service's answer to the client.
func relay(w http.ResponseWriter, r *http.Request, log *slog.Logger, resp *http.Response) {
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	if v := resp.Header.Get("Idempotent-Replayed"); v != "" {
		w.Header().Set("Idempotent-Replayed", v)
	}
	if loc := resp.Header.Get("Location"); strings.HasPrefix(loc, "/orders/") {
		w.Header().Set("Location", "/api"+loc)
	}
	w.WriteHeader(resp.StatusCode)
	buf := relayBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(w, resp.Body, *buf)
	relayBufs.Put(buf)
	if err != nil {
		log.Warn("relay upstream answer", "request_id", web.RequestID(r.Context()), "err", err)
		// The status is out; a cut body must not reach the client as a
		// complete answer. Aborting resets the connection instead.
		panic(http.ErrAbortHandler)
	}
}
