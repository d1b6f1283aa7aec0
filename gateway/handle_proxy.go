package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/web"
)

// maxBody is the largest checkout body the gateway forwards.
const maxBody = 1 << 20

func handleCheckout(log *slog.Logger, cfg Config, client *http.Client) http.Handler {
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
		forward(w, r, log, cfg, client, http.MethodPost, cfg.OrderServiceURL+"/orders", body)
	})
}

func handleGetOrder(log *slog.Logger, cfg Config, client *http.Client) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
		if err != nil || id <= 0 {
			web.WriteProblem(w, r, http.StatusBadRequest, "the order id must be a positive integer",
				web.FieldError{Field: "id", Message: "must be a positive integer"})
			return
		}
		forward(w, r, log, cfg, client, http.MethodGet, fmt.Sprintf("%s/orders/%d", cfg.OrderServiceURL, id), nil)
	})
}

// forward calls the order service with a timeout and relays its answer. When
// the order service cannot be reached the client gets a prompt 503 (or 504
// when it did not answer in time), never a hang.
func forward(w http.ResponseWriter, r *http.Request, log *slog.Logger, cfg Config, client *http.Client, method, url string, body []byte) {
	ctx, cancel := context.WithTimeout(r.Context(), cfg.UpstreamTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		log.Error("build upstream request", "err", err)
		web.WriteProblem(w, r, http.StatusInternalServerError, "internal error")
		return
	}
	// Authorization carries an order's access token; web.UserHeader the
	// signed-in customer, set by guard only.
	for _, h := range []string{"Content-Type", "Accept", "Idempotency-Key", "Authorization", web.UserHeader} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set(web.RequestIDHeader, web.RequestID(r.Context()))

	resp, err := client.Do(req)
	if err != nil {
		log.Warn("order service call failed", "err", err, "request_id", web.RequestID(r.Context()))
		if r.Context().Err() != nil {
			return // the client went away
		}
		if errors.Is(err, context.DeadlineExceeded) {
			web.WriteProblem(w, r, http.StatusGatewayTimeout, "the order service did not answer in time; please retry")
			return
		}
		web.WriteProblem(w, r, http.StatusServiceUnavailable, "the order service is unavailable; please retry")
		return
	}
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
	if _, err := io.Copy(w, resp.Body); err != nil {
		log.Warn("relay upstream answer", "err", err, "request_id", web.RequestID(r.Context()))
		// The status is out; a cut body must not reach the client as a
		// complete answer. Aborting resets the connection instead.
		panic(http.ErrAbortHandler)
	}
}
