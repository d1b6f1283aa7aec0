package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// QueueDepth is one queue's messages at one moment.
type QueueDepth struct {
	Ready   int `json:"messages_ready"`
	Unacked int `json:"messages_unacknowledged"`
}

// Messages is what the queue holds: waiting plus being worked on.
func (d QueueDepth) Messages() int { return d.Ready + d.Unacked }

// QueueSample is every watched queue at one moment.
type QueueSample struct {
	At     time.Time
	Depths map[string]QueueDepth
}

// Total is the messages in the given queues.
func (s QueueSample) Total(queues []string) int {
	n := 0
	for _, q := range queues {
		n += s.Depths[q].Messages()
	}
	return n
}

// Ready is the messages waiting (not yet handed to a consumer) in the queues.
func (s QueueSample) Ready(queues []string) int {
	n := 0
	for _, q := range queues {
		n += s.Depths[q].Ready
	}
	return n
}

// QueueWatch samples queue depths through the RabbitMQ management API, a
// read of the broker's statistics that costs the services nothing. The
// broker refreshes those statistics every collect_statistics_interval (5 s
// by default), so a sample can be that old: peaks and drain times from it are
// that coarse.
type QueueWatch struct {
	Main   []string // the saga's work queues
	api    *url.URL
	vhost  string
	client *http.Client

	mu      sync.Mutex
	samples []QueueSample
	err     error
}

// NewQueueWatch returns nil when api is empty.
func NewQueueWatch(api, vhost string, queues []string) (*QueueWatch, error) {
	if api == "" {
		return nil, nil
	}
	u, err := url.Parse(strings.TrimRight(api, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("-rabbit-api %q is not a URL", api)
	}
	return &QueueWatch{Main: queues, api: u, vhost: vhost, client: &http.Client{Timeout: 5 * time.Second}}, nil
}

// watched reports whether name is a main queue or one of its retry or
// dead-letter queues.
func (w *QueueWatch) watched(name string) bool {
	for _, q := range w.Main {
		if name == q || strings.HasPrefix(name, q+".") {
			return true
		}
	}
	return false
}

// Fetch reads the depths of the watched queues once.
func (w *QueueWatch) Fetch(ctx context.Context) (QueueSample, error) {
	u := *w.api
	user := u.User
	u.User = nil
	endpoint := u.String() + "/api/queues/" + url.PathEscape(w.vhost) +
		"?columns=name,messages_ready,messages_unacknowledged"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return QueueSample{}, err
	}
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return QueueSample{}, fmt.Errorf("management API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return QueueSample{}, fmt.Errorf("management API: GET %s: %s", endpoint, resp.Status)
	}
	var queues []struct {
		Name string `json:"name"`
		QueueDepth
	}
	if err := json.NewDecoder(resp.Body).Decode(&queues); err != nil {
		return QueueSample{}, fmt.Errorf("management API: decode queues: %w", err)
	}
	s := QueueSample{At: time.Now(), Depths: map[string]QueueDepth{}}
	for _, q := range queues {
		if w.watched(q.Name) {
			s.Depths[q.Name] = q.QueueDepth
		}
	}
	return s, nil
}

// Run samples every interval until ctx ends. A failing API is remembered,
// not fatal: the report then says queue depths are unknown.
func (w *QueueWatch) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s, err := w.Fetch(ctx)
		w.mu.Lock()
		if err == nil {
			w.samples = append(w.samples, s)
		} else if ctx.Err() == nil {
			w.err = err
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Latest is the newest sample.
func (w *QueueWatch) Latest() (QueueSample, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.samples) == 0 {
		return QueueSample{}, false
	}
	return w.samples[len(w.samples)-1], true
}

// Samples is every sample so far.
func (w *QueueWatch) Samples() ([]QueueSample, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.samples), w.err
}

// Empty reports whether the newest sample, taken after since, shows the
// main queues empty.
func (w *QueueWatch) Empty(since time.Time) bool {
	s, ok := w.Latest()
	return ok && s.At.After(since) && s.Total(w.Main) == 0
}

// QueueStat is one queue over a run.
type QueueStat struct {
	Name   string    `json:"name"`
	Start  int       `json:"start"`
	Peak   int       `json:"peak"`
	PeakAt time.Time `json:"peak_at"`
	End    int       `json:"end"`
	// PeakReady is the most messages waiting for a consumer at once (the
	// rest of Peak were being worked on).
	PeakReady int `json:"peak_ready"`
}

// queueStats sums samples up per queue: the main queues always, the retry
// and dead-letter queues when they held anything.
func queueStats(samples []QueueSample, main []string) []QueueStat {
	if len(samples) == 0 {
		return nil
	}
	names := map[string]bool{}
	for _, s := range samples {
		for n := range s.Depths {
			names[n] = true
		}
	}
	var out []QueueStat
	for _, n := range slices.Sorted(maps.Keys(names)) {
		st := QueueStat{Name: n, Start: samples[0].Depths[n].Messages(), End: samples[len(samples)-1].Depths[n].Messages()}
		for _, s := range samples {
			d := s.Depths[n]
			if d.Messages() > st.Peak {
				st.Peak, st.PeakAt = d.Messages(), s.At
			}
			st.PeakReady = max(st.PeakReady, d.Ready)
		}
		if slices.Contains(main, n) || st.Peak > 0 {
			out = append(out, st)
		}
	}
	// Main queues first, in the saga's order.
	slices.SortStableFunc(out, func(a, b QueueStat) int {
		return rank(main, a.Name) - rank(main, b.Name)
	})
	return out
}

func rank(main []string, name string) int {
	if i := slices.Index(main, name); i >= 0 {
		return i
	}
	return len(main)
}
