package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
)

// sessionIdle is how long an SMTP session may wait in the pool for its
// next mail; older ones are ended with QUIT when the pool is next used.
const sessionIdle = 30 * time.Second

// session is one SMTP connection, greeted (EHLO, STARTTLS and AUTH as
// configured) and between mail transactions whenever it is in the pool.
type session struct {
	c      *smtp.Client
	conn   net.Conn // the socket under c, to cut it
	idle   time.Time
	reused bool // it carried a mail before
}

// cut closes the socket without a word to the server. It is how a mail
// transaction is abandoned: a QUIT, an RSET or closing the data writer
// would first write the final "." of the data (net/textproto finishes an
// open data block before the next command) and the server would take the
// mail.
func (s *session) cut() { _ = s.conn.Close() }

// sessionError is the failure to open a session (connect, greeting, EHLO,
// STARTTLS, AUTH): trouble with the server or the service's settings,
// never with a mail, whatever the reply code.
type sessionError struct{ err error }

func (e sessionError) Error() string { return "smtp session: " + e.err.Error() }
func (e sessionError) Unwrap() error { return e.err }

// sessionPool keeps up to size SMTP sessions and hands each to one mail at
// a time.
type sessionPool struct {
	client *gomail.Client
	slots  chan struct{} // one per session in use

	mu   sync.Mutex
	idle []*session // the most recently used last
}

type connKey struct{}

// dialer is the pool's dial function for go-mail: it dials as go-mail
// would, and hands the socket to the caller through the context, so that a
// session that fails after the dial (greeting, EHLO, AUTH) is closed.
func dialer(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if p, ok := ctx.Value(connKey{}).(*net.Conn); ok && err == nil {
		*p = conn
	}
	return conn, err
}

func newSessionPool(client *gomail.Client, size int) *sessionPool {
	return &sessionPool{client: client, slots: make(chan struct{}, size)}
}

// get returns a session for one mail: an idle one, or a new one. put or
// drop gives it back.
func (p *sessionPool) get(ctx context.Context) (*session, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	p.mu.Lock()
	stale := 0
	for stale < len(p.idle) && time.Since(p.idle[stale].idle) > sessionIdle {
		stale++
	}
	old := slices.Clone(p.idle[:stale])
	p.idle = slices.Delete(p.idle, 0, stale)
	var s *session
	if n := len(p.idle); n > 0 {
		s, p.idle = p.idle[n-1], p.idle[:n-1]
	}
	p.mu.Unlock()
	for _, o := range old {
		go o.quit()
	}
	if s != nil {
		s.reused = true
		return s, nil
	}
	s, err := p.dial(ctx)
	if err != nil {
		<-p.slots
		return nil, err
	}
	return s, nil
}

func (p *sessionPool) dial(ctx context.Context) (*session, error) {
	var conn net.Conn
	c, err := p.client.DialToSMTPClientWithContext(context.WithValue(ctx, connKey{}, &conn))
	if err != nil {
		if conn != nil {
			_ = conn.Close()
		}
		return nil, sessionError{err}
	}
	if conn == nil { // not dialed through dialer: cannot be cut
		_ = c.Close()
		return nil, sessionError{errors.New("no socket")}
	}
	return &session{c: c, conn: conn}, nil
}

// put returns a session that is between transactions to the pool.
func (p *sessionPool) put(s *session) {
	s.idle = time.Now()
	p.mu.Lock()
	p.idle = append(p.idle, s)
	p.mu.Unlock()
	<-p.slots
}

// drop closes a session's socket and frees its place.
func (p *sessionPool) drop(s *session) {
	s.cut()
	<-p.slots
}

// quit ends an idle session politely: it is between transactions, so QUIT
// finishes nothing.
func (s *session) quit() {
	if s.c.UpdateDeadline(2*time.Second) == nil {
		_ = s.c.Quit()
	}
	s.cut()
}

// Close ends the idle sessions.
func (p *sessionPool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range idle {
		wg.Go(s.quit)
	}
	wg.Wait()
}

// window admits mails to the last step of their transaction — the final
// "." of the data, the server's reply, the record — which is where a crash
// can send a mail twice: accepted by the server, not yet recorded. It keeps
// as few mails there at once as the backlog allows: one, unless the mails
// waiting to be sent could not be finished one at a time within budget
// (from the server's recent reply times), then as many as that takes, up
// to max; it closes again once no mail waits. A mail whose handler has less than budget left goes in as soon
// as fewer than max are there.
type window struct {
	max    int
	budget time.Duration
	log    *slog.Logger

	mu      sync.Mutex
	in      int
	open    int           // how many may be in now
	widest  int           // the most it was open since it last was one
	latency time.Duration // moving average of the reply to the end of the data
	queue   []waiter
}

type waiter struct {
	turn     chan struct{}
	deadline time.Time // zero: none
}

func (w *window) allowed(backlog int64) int {
	if w.latency <= 0 {
		return 1
	}
	n := (time.Duration(backlog)*w.latency + w.budget - 1) / w.budget
	return int(min(max(n, 1), time.Duration(w.max)))
}

// enter waits for a place; backlog is the number of mails being sent.
func (w *window) enter(ctx context.Context, backlog int64) error {
	me := waiter{turn: make(chan struct{})}
	me.deadline, _ = ctx.Deadline()
	w.mu.Lock()
	w.queue = append(w.queue, me)
	w.admit(backlog)
	w.mu.Unlock()
	select {
	case <-me.turn:
		return nil
	case <-ctx.Done():
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if i := slices.IndexFunc(w.queue, func(o waiter) bool { return o.turn == me.turn }); i >= 0 {
		w.queue = slices.Delete(w.queue, i, i+1)
	} else { // admitted meanwhile: give the place back
		w.in--
		w.admit(backlog)
	}
	return fmt.Errorf("waiting for the final step: %w", context.Cause(ctx))
}

// leave frees a place; took is how long the server took to reply (0 when
// the mail did not get that far).
func (w *window) leave(took time.Duration, backlog int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.in--
	if took > 0 {
		if w.latency == 0 {
			w.latency = took
		} else {
			w.latency += (took - w.latency) / 4
		}
	}
	w.admit(backlog)
}

// admit lets waiting mails in, first come first. The caller holds mu.
func (w *window) admit(backlog int64) {
	// Once open, the window stays as wide until no mail waits for it: the
	// backlog drains at the pace it opened for, not ever slower.
	if len(w.queue) == 0 {
		w.open = w.allowed(backlog)
		if w.open == 1 && w.widest > 1 {
			w.log.Info("final step back to one mail at a time", "widest", w.widest)
			w.widest = 1
		}
		return
	}
	w.open = max(w.open, w.allowed(backlog))
	if w.open > max(w.widest, 1) {
		// Each mail that far in is one more a crash now can send twice.
		w.log.Info("final step opened for a backlog", "mails_at_once", w.open, "backlog", backlog, "reply_time", w.latency.String())
		w.widest = w.open
	}
	now := time.Now()
	for len(w.queue) > 0 && w.in < w.max {
		head := w.queue[0]
		urgent := !head.deadline.IsZero() && head.deadline.Sub(now) < w.budget
		if w.in >= w.open && !urgent {
			return
		}
		w.in++
		close(head.turn)
		w.queue = w.queue[1:]
	}
}
