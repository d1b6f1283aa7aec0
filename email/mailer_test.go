package main

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// smtpServer speaks just enough SMTP for one mail and then misbehaves the
// way a real server can: drop the connection after it accepted the mail
// (dropAfterAccept) or before it answers the DATA. Mailpit cannot be made
// to do either on cue.
func smtpServer(t *testing.T, dropAfterAccept bool) int {
	return slowSMTPServer(t, dropAfterAccept, 0, nil)
}

// slowSMTPServer is smtpServer taking finalDelay to answer the end of the
// data, counting the mails it accepted in accepted (when not nil).
func slowSMTPServer(t *testing.T, dropAfterAccept bool, finalDelay time.Duration, accepted *atomic.Int64) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go serveSMTP(conn, dropAfterAccept, finalDelay, accepted)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func serveSMTP(conn net.Conn, dropAfterAccept bool, finalDelay time.Duration, accepted *atomic.Int64) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	say := func(s string) { _, _ = conn.Write([]byte(s + "\r\n")) }
	say("220 test ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			say("250-test")
			say("250 8BITMIME")
		case strings.HasPrefix(cmd, "DATA"):
			say("354 go ahead")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			if !dropAfterAccept {
				return // the mail was never accepted
			}
			time.Sleep(finalDelay)
			if accepted != nil {
				accepted.Add(1)
			}
			say("250 queued")
		case strings.HasPrefix(cmd, "RSET"), strings.HasPrefix(cmd, "QUIT"):
			return // accepted, then gone: RSET and QUIT get no answer
		default:
			say("250 ok")
		}
	}
}

func notSent() bool { return false }

func testMailer(t *testing.T, port int) *Mailer {
	t.Helper()
	m, err := NewMailer(Config{SMTPHost: "127.0.0.1", SMTPPort: port, SMTPTimeout: 2 * time.Second, EmailFrom: "Shop <shop@shop.test>", AcceptConcurrency: 1, SMTPSessions: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func TestSendAcceptedThenDropped(t *testing.T) {
	m := testMailer(t, smtpServer(t, true))
	accepted := false
	err := m.Send(context.Background(), Mail{OrderID: 1, Kind: "confirmation", To: "a@b.test", Subject: "s", Text: "t", HTML: "<p>h</p>", MessageID: "x@shop.test"},
		notSent, func() { accepted = true })
	if err != nil || !accepted {
		t.Fatalf("Send = %v, accepted %v: the server took the mail, so it counts as sent and must not be sent again", err, accepted)
	}
}

func TestSendDroppedBeforeAccept(t *testing.T) {
	m := testMailer(t, smtpServer(t, false))
	accepted := false
	err := m.Send(context.Background(), Mail{OrderID: 1, Kind: "confirmation", To: "a@b.test", Subject: "s", Text: "t", HTML: "<p>h</p>", MessageID: "x@shop.test"},
		notSent, func() { accepted = true })
	if err == nil || accepted {
		t.Fatalf("Send = %v, accepted %v: the server never accepted the mail", err, accepted)
	}
}

// Mails queue for their turn at the final step; the wait must not use up
// the time the server has to answer it. 30 mails against a server that
// takes 100 ms for each end of data, with a 1 s SMTP timeout: all of them
// are sent, and each one the server accepted was reported as accepted.
func TestSendQueuedForTheFinalStep(t *testing.T) {
	var accepted atomic.Int64
	port := slowSMTPServer(t, true, 100*time.Millisecond, &accepted)
	m, err := NewMailer(Config{SMTPHost: "127.0.0.1", SMTPPort: port, SMTPTimeout: time.Second, EmailFrom: "Shop <shop@shop.test>", AcceptConcurrency: 1, SMTPSessions: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var (
		wg       sync.WaitGroup
		reported atomic.Int64
		failed   atomic.Int64
	)
	for i := range 30 {
		wg.Go(func() {
			err := m.Send(context.Background(), Mail{OrderID: int64(i), Kind: "confirmation", To: "a@b.test", Subject: "s", Text: "t", HTML: "<p>h</p>", MessageID: "x@shop.test"},
				notSent, func() { reported.Add(1) })
			if err != nil {
				failed.Add(1)
				t.Log(err)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || reported.Load() != 30 || accepted.Load() != 30 {
		t.Fatalf("%d failed, %d reported accepted, server accepted %d; want 0, 30, 30", failed.Load(), reported.Load(), accepted.Load())
	}
}

// A mail whose handler gives up while it waits for its turn at the final
// step is cut off: the relay never gets its final ".", so it is not sent
// behind the caller's back (a polite QUIT would write it).
func TestSendAbandonedIsCut(t *testing.T) {
	r := startRelay(t, 300*time.Millisecond, nil)
	m := testMailer(t, r.Port)
	first := Mail{OrderID: 1, Kind: "confirmation", To: "a@b.test", Subject: "s", Text: "t", HTML: "<p>h</p>", MessageID: "first@shop.test"}
	second := first
	second.OrderID, second.MessageID = 2, "second@shop.test"

	var wg sync.WaitGroup
	wg.Go(func() {
		if err := m.Send(context.Background(), first, notSent, func() {}); err != nil {
			t.Errorf("first: %v", err)
		}
	})
	// The first mail holds the final step: its end of data reached the relay.
	waitFor(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.ends[first.MessageID] == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := m.Send(ctx, second, notSent, func() { t.Error("second reported accepted") }); err == nil {
		t.Fatal("second: Send = nil after its context ended")
	}
	wg.Wait()
	// The second transaction ends at the relay one way or the other.
	waitFor(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.abandoned.Load() == 1 || r.ends[second.MessageID] > 0
	})
	if got := r.Accepted(); got[second.MessageID] != 0 || got[first.MessageID] != 1 {
		t.Fatalf("accepted %v: the abandoned mail was finished", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
