package main

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// relay is a tiny SMTP server of the tests' own, for what Mailpit cannot be
// made to do on cue: take its time to answer the end of the data, refuse a
// mail with a chosen reply, and count exactly which mails it accepted and
// which transactions were cut before their end.
type relay struct {
	Port int
	// Delay is how long the answer to the end of the data takes.
	Delay time.Duration
	// Reply, when set, gives the reply to the end of the data of a mail (by
	// its Message-ID, and the how-manieth time this mail got there, from 1);
	// "" or a 2xx reply accepts it.
	Reply func(messageID string, n int) string
	// HangUp closes each connection after the reply to its first mail,
	// without a word (as a server that times idle sessions out).
	HangUp bool
	// Drop closes the connection at the end of the data instead of
	// answering: the mail is not accepted.
	Drop bool

	mu       sync.Mutex
	accepted map[string]int // Message-ID → times accepted
	ends     map[string]int // Message-ID → times its end of data was reached

	sessions  atomic.Int64 // connections accepted
	begun     atomic.Int64 // MAIL FROM commands
	abandoned atomic.Int64 // transactions whose connection ended inside DATA
}

// startRelay starts a relay answering the end of the data after delay.
func startRelay(t *testing.T, delay time.Duration, reply func(messageID string, n int) string) *relay {
	t.Helper()
	r := &relay{Delay: delay, Reply: reply}
	r.start(t)
	return r
}

// start serves until the test ends.
func (r *relay) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.Port = ln.Addr().(*net.TCPAddr).Port
	r.accepted, r.ends = map[string]int{}, map[string]int{}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close() // sessions a client keeps open
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			r.sessions.Add(1)
			wg.Go(func() { r.serve(conn) })
		}
	})
}

// Accepted returns how many times each mail was accepted.
func (r *relay) Accepted() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.accepted))
	for k, v := range r.accepted {
		out[k] = v
	}
	return out
}

// Total is the number of mails accepted.
func (r *relay) Total() int { return countAll(r.Accepted()) }

func (r *relay) serve(conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	say := func(s string) { _, _ = conn.Write([]byte(s + "\r\n")) }
	say("220 relay.test ESMTP")
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			say("250-relay.test")
			say("250 8BITMIME")
		case strings.HasPrefix(cmd, "MAIL"):
			r.begun.Add(1)
			say("250 ok")
		case strings.HasPrefix(cmd, "DATA"):
			say("354 go ahead")
			id, complete := "", false
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					break
				}
				if l == ".\r\n" {
					complete = true
					break
				}
				if v, ok := cutPrefixFold(l, "Message-ID:"); ok && id == "" {
					id = strings.Trim(strings.TrimSpace(v), "<>")
				}
			}
			if !complete {
				r.abandoned.Add(1)
				return
			}
			if r.Drop {
				return
			}
			r.mu.Lock()
			r.ends[id]++
			n := r.ends[id]
			r.mu.Unlock()
			reply := ""
			if r.Reply != nil {
				reply = r.Reply(id, n)
			}
			time.Sleep(r.Delay)
			if reply == "" || reply[0] == '2' {
				r.mu.Lock()
				r.accepted[id]++
				r.mu.Unlock()
				reply = "250 2.0.0 queued"
			}
			say(reply)
			if strings.HasPrefix(reply, "421") || r.HangUp {
				return
			}
		case strings.HasPrefix(cmd, "QUIT"):
			say("221 bye")
			return
		default:
			say("250 ok")
		}
	}
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}
