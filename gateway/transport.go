package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// transport is the gateway's RoundTripper to the services: plain HTTP/1.1
// over kept-alive connections, each request written and its answer read
// on the caller's goroutine. net/http's Transport gives every connection a
// reading and a writing goroutine and hands each request and answer across
// to them; for a gateway whose every request is one small exchange with
// one upstream, those hand-offs (and the read its reader makes after each
// answer) were about a quarter of its CPU per checkout. Requests it cannot
// carry (https, through a proxy) go to fallback.
//
// A request's context bounds it: when the context ends, the connection's
// deadline is set to the past, the call fails with the context's error and
// the connection is closed.
type transport struct {
	dialer      net.Dialer
	maxIdle     int           // idle connections kept per address
	idleTimeout time.Duration // an idle connection older than this is closed, not used
	fallback    http.RoundTripper

	mu   sync.Mutex
	idle map[string][]*upstreamConn // by host:port, the most recently used last
}

type upstreamConn struct {
	net.Conn
	br      *bufio.Reader
	bw      *bufio.Writer
	addr    string
	reused  bool // it carried an exchange before this one
	idleAt  time.Time
	stopped func() bool // stops the context's hook; false: the hook ran
}

func newTransport(fallback http.RoundTripper) *transport {
	return &transport{
		dialer:      net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second},
		maxIdle:     256,
		idleTimeout: 90 * time.Second, // the services' servers close idle connections after 120 s
		fallback:    fallback,
		idle:        map[string][]*upstreamConn{},
	}
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || req.URL.User != nil {
		return t.fallback.RoundTrip(req)
	}
	if p, err := http.ProxyFromEnvironment(req); err != nil || p != nil {
		return t.fallback.RoundTrip(req)
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	ctx := req.Context()
	for {
		c, err := t.conn(ctx, addr)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := t.exchange(ctx, c, req)
		if err == nil {
			return resp, nil
		}
		c.Close()
		var stale staleError
		if !errors.As(err, &stale) || ctx.Err() != nil {
			closeBody(req)
			return nil, err
		}
		// The connection was closed by the other end while it lay idle
		// and nothing came back: the request is sent again on a new
		// connection, as net/http's Transport does, only when that is
		// safe (an idempotent request whose body can be made again).
		if req, err = rewound(req); err != nil {
			return nil, stale.err
		}
	}
}

// staleError is a reused connection that gave no byte of an answer.
type staleError struct{ err error }

func (e staleError) Error() string { return e.err.Error() }
func (e staleError) Unwrap() error { return e.err }

// rewound returns req ready to be sent again, or an error when it may not
// be: only requests that are safe to repeat (GET, HEAD, or with an
// Idempotency-Key) and whose body can be read again.
func rewound(req *http.Request) (*http.Request, error) {
	switch {
	case req.Method == http.MethodGet || req.Method == http.MethodHead:
	case req.Header.Get(IdempotencyKeyHeader) != "":
	default:
		return nil, errors.New("not safe to repeat")
	}
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	if req.GetBody == nil {
		return nil, errors.New("body cannot be read again")
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	r := *req
	r.Body = body
	return &r, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// conn returns an idle connection to addr, or dials one.
func (t *transport) conn(ctx context.Context, addr string) (*upstreamConn, error) {
	now := time.Now()
	t.mu.Lock()
	for conns := t.idle[addr]; len(conns) > 0; conns = t.idle[addr] {
		c := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		t.idle[addr] = conns[:len(conns)-1]
		if now.Sub(c.idleAt) < t.idleTimeout {
			t.mu.Unlock()
			return c, nil
		}
		c.Close()
	}
	t.mu.Unlock()
	nc, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &upstreamConn{Conn: nc, br: bufio.NewReaderSize(nc, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10), addr: addr}, nil
}

// put keeps c for the next request, or closes it when enough are kept.
func (t *transport) put(c *upstreamConn) {
	c.reused, c.idleAt, c.stopped = true, time.Now(), nil
	t.mu.Lock()
	if len(t.idle[c.addr]) < t.maxIdle {
		t.idle[c.addr] = append(t.idle[c.addr], c)
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// CloseIdleConnections closes the connections kept for later requests.
func (t *transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*upstreamConn{}
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.Close()
		}
	}
	if ci, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// aLongTimeAgo is a deadline that makes a blocked read or write return.
var aLongTimeAgo = time.Unix(1, 0)

// exchange writes req on c and reads the answer's head. The answer's body
// hands c back to the pool once it is read to its end and closed.
func (t *transport) exchange(ctx context.Context, c *upstreamConn, req *http.Request) (*http.Response, error) {
	c.stopped = context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
	fail := func(err error) (*http.Response, error) {
		if !c.stopped() && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := req.Write(c.bw); err != nil {
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		if c.reused {
			err = staleError{err}
		}
		return fail(err)
	}
	for {
		if _, err := c.br.Peek(1); err != nil {
			if c.reused {
				err = staleError{err}
			}
			return fail(err)
		}
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			return fail(err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // an interim answer: the final one follows
		}
		keep := !resp.Close && !req.Close
		if resp.Body == http.NoBody {
			t.release(c, keep)
			return resp, nil
		}
		resp.Body = &upstreamBody{rc: resp.Body, t: t, c: c, keep: keep}
		return resp, nil
	}
}

// release hands c back to the pool when it may carry another exchange,
// and closes it otherwise.
func (t *transport) release(c *upstreamConn, keep bool) {
	if c.stopped() && keep {
		t.put(c)
		return
	}
	c.Close()
}

// upstreamBody is an answer's body: read to its end and closed, it hands
// its connection back; closed before its end, it closes the connection
// (draining what is left could wait on a stalled upstream).
type upstreamBody struct {
	rc     io.ReadCloser
	t      *transport
	c      *upstreamConn
	keep   bool
	eof    bool
	closed bool
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *upstreamBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	if !b.eof {
		_ = b.c.SetDeadline(aLongTimeAgo) // a read under way returns
		b.c.stopped()
		return b.c.Close()
	}
	err := b.rc.Close() // at its end: nothing left to drain
	b.t.release(b.c, b.keep && err == nil)
	return err
}
