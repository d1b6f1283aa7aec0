package web

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Check is one dependency check: nil means healthy.
type Check func(ctx context.Context) error

// Health serves the probes of a service.
//
//   - /livez answers 200 while the process runs (a restart would not help
//     anything else).
//   - /readyz answers 200 when the Ready checks pass: the service can do its
//     work now.
//   - /health reports every check by name, 503 and "unhealthy" when one fails.
//
// Both name each check "ok" or "failing", never the error itself: a
// driver's error tells the public addresses, user names and versions. The
// error goes to Log when a check starts failing (and a line when it
// recovers), not at every probe.
type Health struct {
	Service string
	Ready   map[string]Check // what /readyz requires
	Extra   map[string]Check // reported by /health, not required for readiness
	// Stopping, when it returns true, makes /readyz fail so a load balancer
	// stops sending requests during a graceful shutdown.
	Stopping func() bool
	// Log receives a failing check's error, which the public answers do
	// not show.
	Log *slog.Logger
}

// HandleLivez answers 200.
func (Health) HandleLivez() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "alive"})
	})
}

// HandleReadyz answers 200 when every readiness check passes, 503 otherwise.
func (h Health) HandleReadyz() http.Handler {
	seen := &checkStates{log: h.Log, endpoint: "/readyz"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		results := seen.run(r.Context(), h.Ready)
		status, code := "ready", http.StatusOK
		if h.Stopping != nil && h.Stopping() {
			status, code = "stopping", http.StatusServiceUnavailable
		}
		for _, v := range results {
			if v != "ok" {
				status, code = "not ready", http.StatusServiceUnavailable
			}
		}
		WriteJSON(w, code, map[string]any{"status": status, "checks": results})
	})
}

// HandleHealth reports every check.
func (h Health) HandleHealth() http.Handler {
	seen := &checkStates{log: h.Log, endpoint: "/health"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		all := make(map[string]Check, len(h.Ready)+len(h.Extra))
		for k, v := range h.Ready {
			all[k] = v
		}
		for k, v := range h.Extra {
			all[k] = v
		}
		results := seen.run(r.Context(), all)
		status, code := "healthy", http.StatusOK
		for _, v := range results {
			if v != "ok" {
				status, code = "unhealthy", http.StatusServiceUnavailable
			}
		}
		WriteJSON(w, code, map[string]any{"status": status, "service": h.Service, "checks": results})
	})
}

// checkStates remembers which checks failed last time, so a failure is
// logged when it begins.
type checkStates struct {
	log      *slog.Logger
	endpoint string
	mu       sync.Mutex
	failing  map[string]bool
}

// run runs the checks at once under one timeout and returns "ok" or
// "failing" for each.
func (c *checkStates) run(ctx context.Context, checks map[string]Check) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := make(map[string]string, len(checks))
	for name, check := range checks {
		wg.Go(func() {
			err := check(ctx)
			c.note(name, err)
			res := "ok"
			if err != nil {
				res = "failing"
			}
			mu.Lock()
			out[name] = res
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func (c *checkStates) note(name string, err error) {
	c.mu.Lock()
	was := c.failing[name]
	if c.failing == nil {
		c.failing = map[string]bool{}
	}
	c.failing[name] = err != nil
	c.mu.Unlock()
	switch {
	case c.log == nil:
	case err != nil && !was:
		c.log.Warn("check failing", "check", name, "endpoint", c.endpoint, "err", err)
	case err == nil && was:
		c.log.Info("check ok again", "check", name, "endpoint", c.endpoint)
	}
}
