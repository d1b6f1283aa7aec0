package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
)

func notSent() bool { return false }

func testMailer(t *testing.T, port int) *Mailer {
	t.Helper()
	m, err := NewMailer(Config{SMTPHost: "127.0.0.1", SMTPPort: port, SMTPTimeout: 2 * time.Second, EmailFrom: "Shop <shop@shop.test>", AcceptConcurrency: 1, SMTPSessions: 16}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func testMail(i int) Mail {
	return Mail{OrderID: int64(i), Kind: "confirmation", To: "a@b.test", Subject: "s", Text: "t", HTML: "<p>h</p>", MessageID: fmt.Sprintf("m%d@shop.test", i)}
}

// A server that took the mail and then went away without a word: the mail
// counts as sent and must not be sent again.
func TestSendAcceptedThenDropped(t *testing.T) {
	r := &relay{HangUp: true}
	r.start(t)
	accepted := false
	err := testMailer(t, r.Port).Send(context.Background(), testMail(1), notSent, func() { accepted = true })
	if err != nil || !accepted {
		t.Fatalf("Send = %v, accepted %v: the server took the mail", err, accepted)
	}
}

func TestSendDroppedBeforeAccept(t *testing.T) {
	r := &relay{Drop: true}
	r.start(t)
	accepted := false
	err := testMailer(t, r.Port).Send(context.Background(), testMail(1), notSent, func() { accepted = true })
	if err == nil || accepted {
		t.Fatalf("Send = %v, accepted %v: the server never accepted the mail", err, accepted)
	}
}

// Mails queue for their turn at the final step; the wait must not use up
// the time the server has to answer it. 30 mails against a server that
// takes 100 ms for each end of data, with a 1 s SMTP timeout and one mail
// at a time in the final step: all of them are sent, and each one the
// server accepted was reported as accepted.
func TestSendQueuedForTheFinalStep(t *testing.T) {
	r := startRelay(t, 100*time.Millisecond, nil)
	m, err := NewMailer(Config{SMTPHost: "127.0.0.1", SMTPPort: r.Port, SMTPTimeout: time.Second, EmailFrom: "Shop <shop@shop.test>", AcceptConcurrency: 1, SMTPSessions: 16}, slog.New(slog.DiscardHandler))
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
			if err := m.Send(context.Background(), testMail(i), notSent, func() { reported.Add(1) }); err != nil {
				failed.Add(1)
				t.Log(err)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || reported.Load() != 30 || r.Total() != 30 {
		t.Fatalf("%d failed, %d reported accepted, server accepted %d; want 0, 30, 30", failed.Load(), reported.Load(), r.Total())
	}
}

// A mail whose handler gives up while it waits for its turn at the final
// step is cut off: the relay never gets its final ".", so it is not sent
// behind the caller's back (a polite QUIT would write it).
func TestSendAbandonedIsCut(t *testing.T) {
	r := startRelay(t, 300*time.Millisecond, nil)
	m := testMailer(t, r.Port)
	first, second := testMail(1), testMail(2)

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

// Sessions are reused; one the server has closed meanwhile is replaced
// without the mail failing.
func TestSendReusesSessions(t *testing.T) {
	r := startRelay(t, 0, nil)
	m := testMailer(t, r.Port)
	for i := range 5 {
		if err := m.Send(context.Background(), testMail(i), notSent, func() {}); err != nil {
			t.Fatal(err)
		}
	}
	if r.Total() != 5 || r.sessions.Load() != 1 {
		t.Fatalf("%d mails on %d sessions, want 5 on 1", r.Total(), r.sessions.Load())
	}

	hangs := &relay{HangUp: true}
	hangs.start(t)
	m = testMailer(t, hangs.Port)
	for i := range 3 {
		if err := m.Send(context.Background(), testMail(i), notSent, func() {}); err != nil {
			t.Fatalf("mail %d after the server closed its session: %v", i, err)
		}
	}
	if hangs.Total() != 3 || hangs.sessions.Load() != 3 {
		t.Fatalf("%d mails on %d sessions, want 3 on 3", hangs.Total(), hangs.sessions.Load())
	}
}

// Refusals keep their reply code, and what is in the way of a session is
// told apart from a refusal of the mail.
func TestRefusal(t *testing.T) {
	for _, tt := range []struct {
		name  string
		reply string
		final bool
	}{
		{"MailboxUnavailable", "550 5.1.1 no such user", true},
		{"Greylisted", "451 4.7.1 greylisted, try again later", false},
		{"Busy", "421 4.3.2 too many connections", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, 0, func(string, int) string { return tt.reply })
			err := testMailer(t, r.Port).Send(context.Background(), testMail(1), notSent, func() { t.Error("accepted") })
			reply, final := refusal(err)
			if reply != tt.reply || final != tt.final {
				t.Fatalf("refusal(%v) = %q, %v; want %q, %v", err, reply, final, tt.reply, tt.final)
			}
		})
	}
	// Nobody listening: connection trouble, not final.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	err = testMailer(t, port).Send(context.Background(), testMail(1), notSent, func() {})
	if _, final := refusal(err); err == nil || final {
		t.Fatalf("no server: %v, final %v", err, final)
	}
}

func TestQueue(t *testing.T) {
	if Queue != events.QueueEmail || len(events.QueueBindings(Queue)) == 0 {
		t.Fatalf("Queue %q, the contract's %q with bindings %v", Queue, events.QueueEmail, events.QueueBindings(Queue))
	}
}
