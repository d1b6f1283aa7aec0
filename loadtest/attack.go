package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Sample is one checkout request as the client saw it.
type Sample struct {
	At      time.Time     // when the request was sent
	Latency time.Duration // until the whole answer was read
	Code    int           // 0 when no answer came
	Err     string        // empty for a 201 with an order id
	OrderID int64         // the order of a 201
	Token   string        // its access token, to read it with
	Decline bool          // the order was priced to be declined
}

// OK reports whether the checkout was accepted with an order id.
func (s Sample) OK() bool { return s.Code == http.StatusCreated && s.Err == "" && s.OrderID > 0 }

// Customers makes a unique customer for every order: user ids count up from
// a base taken from the clock, so runs on the same system never share one,
// and the id in an answer leads back to what was asked for.
type Customers struct {
	url          string
	base         int64
	next         atomic.Int64
	declined     float64
	price        string
	declinePrice string
}

// NewCustomers returns the customers of one run.
func NewCustomers(cfg Config) *Customers {
	return &Customers{
		url:          strings.TrimRight(cfg.Target, "/") + "/api/checkout",
		base:         time.Now().UnixMilli() * 1000,
		declined:     cfg.Declined,
		price:        cfg.Price,
		declinePrice: cfg.DeclinePrice,
	}
}

// Declines reports whether the order with sequence number seq is priced to
// be declined. Declined orders are spread evenly: order seq is one when
// floor((seq+1)·share) steps up, so any prefix of n orders holds
// floor(n·share) of them.
func (c *Customers) Declines(seq int64) bool {
	return math.Floor(float64(seq+1)*c.declined) > math.Floor(float64(seq)*c.declined)
}

// Sent is how many checkouts have been asked for so far.
func (c *Customers) Sent() int64 { return c.next.Load() }

// Targeter returns the next checkout for vegeta; it is safe for concurrent use.
func (c *Customers) Targeter() vegeta.Targeter {
	header := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}}
	return func(t *vegeta.Target) error {
		t.Method = http.MethodPost
		t.URL = c.url
		t.Header = header // vegeta copies it into each request
		t.Body = c.appendBody(nil, c.next.Add(1)-1)
		return nil
	}
}

// appendBody appends the checkout of order seq to b, priced to be declined
// when Declines says so.
func (c *Customers) appendBody(b []byte, seq int64) []byte {
	price := c.price
	if c.Declines(seq) {
		price = c.declinePrice
	}
	user := c.base + seq
	return fmt.Appendf(b, `{"user_id":%d,"user_email":"lt%d@example.com","items":[{"product_id":%d,"quantity":1,"price":%q}]}`,
		user, user, seq%1000+1, price)
}

// sample turns vegeta's result into a Sample.
func (c *Customers) sample(r *vegeta.Result) Sample {
	return c.answer(Sample{At: r.Timestamp, Latency: r.Latency, Code: int(r.Code), Err: r.Error}, r.Body)
}

// answer completes s from the answer's body; the user id in it tells
// which order it was.
func (c *Customers) answer(s Sample, b []byte) Sample {
	switch {
	case s.Code == http.StatusCreated:
		var body struct {
			ID          int64  `json:"id"`
			UserID      int64  `json:"user_id"`
			Status      string `json:"status"`
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(b, &body); err != nil || body.ID <= 0 || body.UserID < c.base {
			s.Err = "201 without a readable order"
			return s
		}
		s.OrderID, s.Token = body.ID, body.AccessToken
		s.Decline = c.Declines(body.UserID - c.base)
	case s.Code != 0:
		// A problem+json answer says why; keep its detail for the error list.
		var p struct {
			Detail string `json:"detail"`
		}
		if json.Unmarshal(b, &p) == nil && p.Detail != "" {
			s.Err = fmt.Sprintf("%d: %s", s.Code, p.Detail)
		} else if s.Err == "" {
			s.Err = fmt.Sprintf("%d", s.Code)
		}
	}
	return s
}

// attack sends rate checkouts per second for d and returns every request.
// It stops early when ctx ends; requests in flight then finish or time out.
func attack(ctx context.Context, cfg Config, cust *Customers, rate int, d time.Duration, prog *Progress) []Sample {
	atk := vegeta.NewAttacker(
		vegeta.Timeout(cfg.Timeout),
		vegeta.Workers(uint64(min(cfg.MaxWorkers, 32))),
		vegeta.MaxWorkers(uint64(cfg.MaxWorkers)),
		vegeta.KeepAlive(true),
		vegeta.MaxBody(64<<10),
		vegeta.Redirects(vegeta.NoFollow),
	)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	samples := make([]Sample, 0, int(float64(rate)*d.Seconds())+16)
	for r := range atk.Attack(cust.Targeter(), vegeta.Rate{Freq: rate, Per: time.Second}, d, "checkout") {
		s := cust.sample(r)
		samples = append(samples, s)
		prog.Add(s)
	}
	return samples
}
