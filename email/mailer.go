package main

import (
	"bytes"
	"context"
	"fmt"
	htmltemplate "html/template"
	"net/mail"
	"strings"
	texttemplate "text/template"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/money"
)

// Mail is one message to a customer.
type Mail struct {
	OrderID   int64
	Kind      string // events.MailConfirmation or events.MailPaymentFailed
	To        string
	Subject   string
	Text      string
	HTML      string
	MessageID string // without angle brackets
}

// Mailer sends mails over SMTP.
type Mailer struct {
	client *gomail.Client
	from   string
	domain string
	// finishing admits the mails that may be between the end of their data
	// and their record at once (EMAIL_ACCEPT_CONCURRENCY): each of them is
	// sent twice if the service dies right then.
	finishing chan struct{}
	timeout   time.Duration // SMTP_TIMEOUT
}

// NewMailer returns a mailer for the SMTP server in cfg.
func NewMailer(cfg Config) (*Mailer, error) {
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
	opts := []gomail.Option{gomail.WithPort(cfg.SMTPPort), gomail.WithTLSPolicy(policy), gomail.WithTimeout(cfg.SMTPTimeout), gomail.WithoutNoop()}
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
	return &Mailer{client: client, from: from.String(), domain: domain, finishing: make(chan struct{}, cfg.AcceptConcurrency), timeout: cfg.SMTPTimeout}, nil
}

// MessageID is derived from the order and the kind of mail, so a mail sent
// twice carries the same Message-ID and mail clients can fold duplicates.
func (m *Mailer) MessageID(orderID int64, kind string) string {
	return fmt.Sprintf("order-%d.%s@%s", orderID, kind, m.domain)
}

// Send hands the mail to the SMTP server. accepted runs the moment the
// server answered the end of the data with 250, before anything else (the
// QUIT, the return): the caller records the mail there, so the window in
// which a crash could send it twice is as short as it can be, and holds at
// most EMAIL_ACCEPT_CONCURRENCY mails. After that
// the mail counts as sent (nil), whatever the rest of the session does.
func (m *Mailer) Send(ctx context.Context, ml Mail, accepted func()) error {
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
	msg.SetGenHeader("X-Order-ID", fmt.Sprint(ml.OrderID))
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

	// go-mail's Send would also RSET (and DialAndSend QUIT) before it
	// returns: round trips during which the mail is sent but not recorded.
	// So the transaction is spoken here, on go-mail's connection (dial,
	// STARTTLS and AUTH as configured).
	c, err := m.client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return fmt.Errorf("smtp send: dial failed: %w", err)
	}
	// Every command is bounded by the connection's deadline (SMTP_TIMEOUT);
	// QUIT politely, and close the socket when QUIT fails.
	defer func() {
		if err := m.client.CloseWithSMTPClient(c); err != nil {
			_ = c.Close()
		}
	}()
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("smtp send: MAIL FROM: %w", err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r); err != nil {
			return fmt.Errorf("smtp send: RCPT TO %s: %w", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp send: DATA: %w", err)
	}
	if _, err := msg.WriteTo(w); err != nil {
		_ = w.Close()
		return fmt.Errorf("smtp send: write: %w", err)
	}
	// The final "." is what makes the server take the mail. Mails are let
	// through this step a few at a time (one by default), so a crash finds
	// at most that many accepted but unrecorded, however many are in flight.
	select {
	case m.finishing <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("smtp send: %w", context.Cause(ctx))
	}
	defer func() { <-m.finishing }()
	// The connection's deadline was set at the dial; the wait for a turn
	// must not eat into the server's time to answer.
	if err := c.UpdateDeadline(m.timeout); err != nil {
		return fmt.Errorf("smtp send: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp send: end of data: %w", err)
	}
	accepted()
	return nil
}

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

func (m *Mailer) compose(orderID int64, kind, to, subject string, d mailData, text *texttemplate.Template, html *htmltemplate.Template) (Mail, error) {
	var tb, hb bytes.Buffer
	if err := text.Execute(&tb, d); err != nil {
		return Mail{}, fmt.Errorf("render text: %w", err)
	}
	if err := html.Execute(&hb, d); err != nil {
		return Mail{}, fmt.Errorf("render html: %w", err)
	}
	return Mail{OrderID: orderID, Kind: kind, To: to, Subject: subject, Text: tb.String(), HTML: hb.String(),
		MessageID: m.MessageID(orderID, kind)}, nil
}
