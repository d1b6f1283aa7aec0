package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"log/slog"
	"net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	texttemplate "text/template"
	"time"

	"github.com/google/uuid"
	gomail "github.com/wneessen/go-mail"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/money"
)

// Mail is one message to a customer.
type Mail struct {
	OrderID   int64
	Kind      string // events.MailConfirmation, events.MailPaymentFailed or events.MailCancelled
	To        string
	Subject   string
	Text      string
	HTML      string
	MessageID string    // without angle brackets
	Key       uuid.UUID // mailKey(MessageID): the mail's identity
}

// Mailer sends mails over SMTP, on a pool of sessions.
type Mailer struct {
	client  *gomail.Client
	from    string
	domain  string
	timeout time.Duration // SMTP_TIMEOUT
	pool    *sessionPool
	// window admits the mails to the step between the end of their data
	// and their record (at most EMAIL_ACCEPT_CONCURRENCY at once, one while
	// the server keeps up): each of them is sent twice if the service dies
	// right then.
	window  *window
	pending atomic.Int64 // mails in Send: the backlog the window opens for
}

// errSentBefore is Send's answer for a mail the record knew by the time it
// would have been finished (a sibling sharing the record sent it).
var errSentBefore = errors.New("smtp send: the mail was sent before")

// NewMailer returns a mailer for the SMTP server in cfg; log hears when
// the final step opens beyond one mail and closes again.
func NewMailer(cfg Config, log *slog.Logger) (*Mailer, error) {
	from, err := mail.ParseAddress(cfg.EmailFrom)
	if err != nil {
		return nil, fmt.Errorf("EMAIL_FROM: %w", err)
	}
	_, domain, _ := strings.Cut(from.Address, "@")
	policy := gomail.NoTLS
	switch cfg.SMTPTLS {
	case "none", "":
	case "opportunistic":
		policy = gomail.TLSOpportunistic
	case "mandatory":
		policy = gomail.TLSMandatory
	default:
		return nil, fmt.Errorf("SMTP_TLS must be none, opportunistic or mandatory, got %q", cfg.SMTPTLS)
	}
	opts := []gomail.Option{gomail.WithPort(cfg.SMTPPort), gomail.WithTLSPolicy(policy), gomail.WithTimeout(cfg.SMTPTimeout),
		gomail.WithoutNoop(), gomail.WithDialContextFunc(dialer)}
	if cfg.SMTPUsername != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthPlain), gomail.WithUsername(cfg.SMTPUsername), gomail.WithPassword(cfg.SMTPPassword))
	}
	client, err := gomail.NewClient(cfg.SMTPHost, opts...)
	if err != nil {
		return nil, fmt.Errorf("smtp client: %w", err)
	}
	if cfg.AcceptConcurrency < 1 {
		return nil, fmt.Errorf("EMAIL_ACCEPT_CONCURRENCY must be at least 1, got %d", cfg.AcceptConcurrency)
	}
	if cfg.SMTPSessions < 1 {
		return nil, fmt.Errorf("SMTP_SESSIONS must be at least 1, got %d", cfg.SMTPSessions)
	}
	// The backlog should drain within a tenth of a handler's time.
	budget := cfg.HandlerTimeout / 10
	if budget <= 0 {
		budget = 3 * time.Second
	}
	return &Mailer{client: client, from: from.String(), domain: domain, timeout: cfg.SMTPTimeout,
		pool:   newSessionPool(client, cfg.SMTPSessions),
		window: &window{max: min(cfg.AcceptConcurrency, cfg.SMTPSessions), budget: budget, log: log}}, nil
}

// Close ends the idle SMTP sessions.
func (m *Mailer) Close() { m.pool.Close() }

// MessageID is derived from the order and the kind of mail, so a mail sent
// twice carries the same Message-ID and mail clients can fold duplicates.
func (m *Mailer) MessageID(orderID int64, kind string) string {
	return fmt.Sprintf("order-%d.%s@%s", orderID, kind, m.domain)
}

// Send hands the mail to the SMTP server on a pooled session. Before the
// final "." it asks sentBefore once more (a sibling may have sent the mail
// meanwhile: errSentBefore); accepted runs the moment the server answered
// the end of the data with 250, before anything else: the caller records
// the mail there, so the window in which a crash could send it twice is as
// short as it can be. After that the mail counts as sent (nil).
//
// Until the final "." an ended ctx abandons the transaction by cutting the
// socket, never by a command that would finish the mail. Once the "." is
// written the reply is awaited whatever ctx says (SMTP_TIMEOUT bounds it):
// it is what says whether the mail went out.
//
// A failure wraps the server's *textproto.Error when it refused (its reply
// code says for how long), is a sessionError when no session could be
// opened, and connection trouble otherwise.
func (m *Mailer) Send(ctx context.Context, ml Mail, sentBefore func() bool, accepted func()) error {
	m.pending.Add(1)
	defer m.pending.Add(-1)
	msg := gomail.NewMsg()
	if err := msg.From(m.from); err != nil {
		return events.Permanent(fmt.Errorf("from: %w", err))
	}
	if err := msg.To(ml.To); err != nil {
		return events.Permanent(fmt.Errorf("to %q: %w", ml.To, err))
	}
	msg.Subject(ml.Subject)
	msg.SetMessageIDWithValue(ml.MessageID)
	msg.SetDate()
	msg.SetGenHeader("X-Order-ID", strconv.FormatInt(ml.OrderID, 10))
	msg.SetGenHeader("X-Mail-Kind", ml.Kind)
	msg.SetBodyString(gomail.TypeTextPlain, ml.Text)
	msg.AddAlternativeString(gomail.TypeTextHTML, ml.HTML)
	from, err := msg.GetSender(false)
	if err != nil {
		return events.Permanent(fmt.Errorf("from: %w", err))
	}
	rcpts, err := msg.GetRecipients()
	if err != nil {
		return events.Permanent(fmt.Errorf("to: %w", err))
	}
	// Rendered before a session is taken: the data goes out in one write,
	// and a mail that cannot be rendered never opens a transaction.
	var data bytes.Buffer
	if _, err := msg.WriteTo(&data); err != nil {
		return events.Permanent(fmt.Errorf("render: %w", err))
	}

	for fresh := false; ; fresh = true {
		s, err := m.pool.get(ctx)
		if err != nil {
			return err
		}
		stale, err := m.transact(ctx, s, from, rcpts, data.Bytes(), sentBefore, accepted)
		// A pooled session the server had closed fails at its first
		// command, before anything of the mail was sent: once more on a
		// new one.
		if stale && !fresh && ctx.Err() == nil {
			continue
		}
		return err
	}
}

// transact runs one mail transaction on s and gives s back to the pool, or
// closes it. stale says that s had carried mails before and failed at its
// first command with connection trouble or a 421.
func (m *Mailer) transact(ctx context.Context, s *session, from string, rcpts []string, data []byte, sentBefore func() bool, accepted func()) (stale bool, err error) {
	// Until the final ".", an ended ctx cuts the socket: whatever the
	// session is blocked on fails at once, and nothing finishes the mail.
	stop := context.AfterFunc(ctx, s.cut)
	keep := false
	defer func() {
		if stop() && keep {
			m.pool.put(s)
		} else {
			m.pool.drop(s)
		}
	}()
	fail := func(what string, err error) error {
		var reply *textproto.Error
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("smtp send: %s: %w (%v)", what, context.Cause(ctx), err)
		case errors.As(err, &reply):
			return replyError{step: what, reply: reply}
		}
		return fmt.Errorf("smtp send: %s: %w", what, err)
	}
	// Before DATA a refused command leaves a session that RSET makes
	// ready for the next mail.
	refused := func(what string, err error, first bool) (bool, error) {
		var reply *textproto.Error
		if errors.As(err, &reply) && reply.Code != 421 && ctx.Err() == nil {
			keep = s.c.Reset() == nil
		}
		return first && s.reused && (reply == nil || reply.Code == 421), fail(what, err)
	}
	if err := s.c.UpdateDeadline(m.timeout); err != nil {
		return false, fail("deadline", err)
	}
	if err := s.c.Mail(from); err != nil {
		return refused("MAIL FROM", err, true)
	}
	for _, r := range rcpts {
		if err := s.c.Rcpt(r); err != nil {
			return refused("RCPT TO "+r, err, false)
		}
	}
	w, err := s.c.Data()
	if err != nil {
		return refused("DATA", err, false)
	}
	// From here on only the final "." (w.Close) or cutting the socket ends
	// the transaction: never w.Close after a failed write, it would finish
	// a truncated mail.
	if _, err := w.Write(data); err != nil {
		return false, fail("write", err)
	}
	backlog := m.pending.Load
	if err := m.window.enter(ctx, backlog()); err != nil {
		return false, fail("final step", err)
	}
	took := time.Duration(0)
	defer func() { m.window.leave(took, backlog()) }()
	// Past this point ctx no longer cuts the socket; if it did already,
	// the transaction is gone.
	if !stop() {
		return false, fail("final step", context.Cause(ctx))
	}
	stop = func() bool { return true } // for the deferred put
	if sentBefore() {
		return false, errSentBefore // keep is false: cut, the "." is never written
	}
	// The wait for a turn must not eat into the server's time to answer.
	if err := s.c.UpdateDeadline(m.timeout); err != nil {
		return false, fail("deadline", err)
	}
	start := time.Now()
	err = w.Close()
	took = time.Since(start)
	if err != nil {
		// A reply ends the transaction, accepted or not: the session
		// carries on, unless the server is closing it (421).
		var reply *textproto.Error
		keep = errors.As(err, &reply) && reply.Code != 421
		return false, fail("end of data", err)
	}
	accepted()
	keep = true
	return false, nil
}

// replyError is the server's refusal of a step of a mail transaction.
type replyError struct {
	step  string
	reply *textproto.Error
}

func (e replyError) Error() string { return "smtp send: " + e.step + ": " + formatReply(e.reply) }
func (e replyError) Unwrap() error { return e.reply }

// formatReply writes a reply as the server sent it (textproto quotes it).
func formatReply(r *textproto.Error) string { return fmt.Sprintf("%03d %s", r.Code, r.Msg) }

type line struct {
	ProductID int64
	Quantity  int
	Price     money.Amount
	Subtotal  money.Amount
}

type mailData struct {
	OrderID int64
	Items   []line
	Total   money.Amount
	Reason  string
}

func lines(items []events.Item) []line {
	out := make([]line, len(items))
	for i, it := range items {
		sub, _ := it.Price.Mul(int64(it.Quantity))
		out[i] = line{ProductID: it.ProductID, Quantity: it.Quantity, Price: it.Price, Subtotal: sub}
	}
	return out
}

var (
	confirmationText = texttemplate.Must(texttemplate.New("").Parse(`Thank you for your order!

Order #{{.OrderID}} is paid and on its way.

{{range .Items}}  product {{.ProductID}}  {{.Quantity}} x {{.Price}} = {{.Subtotal}}
{{end}}
Total: {{.Total}}
`))
	confirmationHTML = htmltemplate.Must(htmltemplate.New("").Parse(`<!doctype html>
<html><body style="font-family:sans-serif">
<h1>Thank you for your order!</h1>
<p>Order <strong>#{{.OrderID}}</strong> is paid and on its way.</p>
<table cellpadding="4"><tr><th>Product</th><th>Quantity</th><th>Price</th><th>Subtotal</th></tr>
{{range .Items}}<tr><td>{{.ProductID}}</td><td>{{.Quantity}}</td><td>{{.Price}}</td><td>{{.Subtotal}}</td></tr>
{{end}}</table>
<p><strong>Total: {{.Total}}</strong></p>
</body></html>
`))
	failureText = texttemplate.Must(texttemplate.New("").Parse(`We could not take the payment for order #{{.OrderID}}.

Reason: {{.Reason}}
Total: {{.Total}}

The order has been cancelled and nothing was charged. You are welcome to try again.
`))
	failureHTML = htmltemplate.Must(htmltemplate.New("").Parse(`<!doctype html>
<html><body style="font-family:sans-serif">
<h1>Payment failed</h1>
<p>We could not take the payment for order <strong>#{{.OrderID}}</strong>.</p>
<p>Reason: {{.Reason}}<br>Total: {{.Total}}</p>
<p>The order has been cancelled and nothing was charged. You are welcome to try again.</p>
</body></html>
`))
	cancelledText = texttemplate.Must(texttemplate.New("").Parse(`Order #{{.OrderID}} has been cancelled.

Reason: {{.Reason}}
Total: {{.Total}}

Nothing was charged for it; if a payment went through after all, it is refunded in full. You are welcome to order again.
`))
	cancelledHTML = htmltemplate.Must(htmltemplate.New("").Parse(`<!doctype html>
<html><body style="font-family:sans-serif">
<h1>Order cancelled</h1>
<p>Order <strong>#{{.OrderID}}</strong> has been cancelled.</p>
<p>Reason: {{.Reason}}<br>Total: {{.Total}}</p>
<p>Nothing was charged for it; if a payment went through after all, it is refunded in full. You are welcome to order again.</p>
</body></html>
`))
)

// Confirmation composes the order confirmation.
func (m *Mailer) Confirmation(ev events.PaymentProcessed) (Mail, error) {
	d := mailData{OrderID: ev.OrderID, Items: lines(ev.Items), Total: ev.TotalAmount}
	return m.compose(ev.OrderID, events.MailConfirmation, ev.UserEmail,
		fmt.Sprintf("Order #%d confirmed: %s", ev.OrderID, ev.TotalAmount), d, confirmationText, confirmationHTML)
}

// PaymentFailed composes the payment-failed notice.
func (m *Mailer) PaymentFailed(ev events.PaymentFailed) (Mail, error) {
	d := mailData{OrderID: ev.OrderID, Items: lines(ev.Items), Total: ev.TotalAmount, Reason: ev.Reason}
	return m.compose(ev.OrderID, events.MailPaymentFailed, ev.UserEmail,
		fmt.Sprintf("Payment failed for order #%d", ev.OrderID), d, failureText, failureHTML)
}

// Cancelled composes the notice that the order was cancelled.
func (m *Mailer) Cancelled(ev events.OrderCancelled) (Mail, error) {
	d := mailData{OrderID: ev.OrderID, Total: ev.TotalAmount, Reason: ev.Reason}
	return m.compose(ev.OrderID, events.MailCancelled, ev.UserEmail,
		fmt.Sprintf("Order #%d cancelled", ev.OrderID), d, cancelledText, cancelledHTML)
}

func (m *Mailer) compose(orderID int64, kind, to, subject string, d mailData, text *texttemplate.Template, html *htmltemplate.Template) (Mail, error) {
	var tb, hb bytes.Buffer
	if err := text.Execute(&tb, d); err != nil {
		return Mail{}, fmt.Errorf("render text: %w", err)
	}
	if err := html.Execute(&hb, d); err != nil {
		return Mail{}, fmt.Errorf("render html: %w", err)
	}
	id := m.MessageID(orderID, kind)
	return Mail{OrderID: orderID, Kind: kind, To: to, Subject: subject, Text: tb.String(), HTML: hb.String(),
		MessageID: id, Key: mailKey(id)}, nil
}
