package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"
)

// Progress prints a live line while load runs: what was sent and answered,
// the last second's latency, and the saga's queue depth. On a terminal the
// line rewrites itself; elsewhere (CI, a pipe) a line is printed every few
// seconds.
type Progress struct {
	w      io.Writer
	tty    bool
	every  time.Duration
	queues *QueueWatch

	mu       sync.Mutex
	label    string
	began    time.Time
	total    time.Duration
	sent     func() int64
	sentBase int64
	answered int
	ok       int
	failed   int
	window   []time.Duration
	printed  bool
}

// NewProgress writes to w; queues may be nil.
func NewProgress(w io.Writer, queues *QueueWatch) *Progress {
	p := &Progress{w: w, every: 5 * time.Second, queues: queues}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty, p.every = true, time.Second
		}
	}
	return p
}

// Begin starts a phase (one attack) of d with the given label.
func (p *Progress) Begin(label string, d time.Duration, sent func() int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.label, p.began, p.total, p.sent = label, time.Now(), d, sent
	p.sentBase = sent()
	p.answered, p.ok, p.failed, p.window = 0, 0, 0, p.window[:0]
}

// Wait starts a phase without load (the backlog draining): the line shows
// the time waited and the queue depth.
func (p *Progress) Wait(label string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.label, p.began, p.sent = label, time.Now(), nil
}

// Add counts one answered request.
func (p *Progress) Add(s Sample) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answered++
	if s.OK() {
		p.ok++
	} else {
		p.failed++
	}
	p.window = append(p.window, s.Latency)
}

// Run prints the line until ctx ends.
func (p *Progress) Run(ctx context.Context) {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.End()
			return
		case <-t.C:
			p.print()
		}
	}
}

// Note prints a message on its own line.
func (p *Progress) Note(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.printed {
		fmt.Fprint(p.w, "\n")
		p.printed = false
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

// End finishes the live line.
func (p *Progress) End() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.printed {
		fmt.Fprint(p.w, "\n")
		p.printed = false
	}
}

func (p *Progress) print() {
	depth := "-"
	if p.queues != nil {
		if s, ok := p.queues.Latest(); ok {
			depth = fmt.Sprint(s.Total(p.queues.Main))
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var line string
	if p.sent == nil {
		if p.label == "" {
			return
		}
		line = fmt.Sprintf("%s [%s] queued %s", p.label, time.Since(p.began).Round(time.Second), depth)
	} else {
		line = p.loadLine(depth)
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.printed = true
	} else {
		fmt.Fprintln(p.w, line)
	}
}

func (p *Progress) loadLine(depth string) string {
	lat := "-"
	if len(p.window) > 0 {
		slices.Sort(p.window)
		lat = fmt.Sprintf("p50 %s p99 %s", fmtDur(quantile(p.window, 0.5)), fmtDur(quantile(p.window, 0.99)))
	}
	p.window = p.window[:0]
	elapsed := min(time.Since(p.began), p.total).Round(time.Second)
	sent := p.sent() - p.sentBase
	return fmt.Sprintf("%s [%3s/%s] sent %d  answered %d (ok %d, failed %d)  in flight %d  last %s  queued %s",
		p.label, elapsed, p.total.Round(time.Second), sent, p.answered, p.ok, p.failed, sent-int64(p.answered), lat, depth)
}
