// Package events is the one contract between the services: the event types and
// their JSON, the exchange and routing keys, and the RabbitMQ plumbing that
// carries them (a reconnecting broker connection, a confirming publisher and a
// consumer with retries and dead letters).
package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/checkout-demo/checkout/internal/money"
)

// Exchange is the durable topic exchange every event is published to.
const Exchange = "ecommerce_events"

// Routing keys: <service>.<aggregate>.<what happened>.
const (
	RouteOrderCreated     = "order.order.created"
	RouteOrderCancelled   = "order.order.cancelled"
	RoutePaymentProcessed = "payment.payment.processed"
	RoutePaymentFailed    = "payment.payment.failed"
	RoutePaymentRefunded  = "payment.payment.refunded"
	RouteEmailSent        = "email.email.sent"
	RouteEmailFailed      = "email.email.failed"
)

// Event type names, sent as the AMQP type property and as event_type.
const (
	TypeOrderCreated     = "OrderCreated"
	TypeOrderCancelled   = "OrderCancelled"
	TypePaymentProcessed = "PaymentProcessed"
	TypePaymentFailed    = "PaymentFailed"
	TypePaymentRefunded  = "PaymentRefunded"
	TypeEmailSent        = "EmailSent"
	TypeEmailFailed      = "EmailFailed"
)

// ContentType of every message body.
const ContentType = "application/json"

// Version is the schema version of every event type defined here. A change
// that is not backwards compatible bumps it.
const Version = 1

// Meta is the envelope every event carries.
type Meta struct {
	EventID    string    `json:"event_id"`
	EventType  string    `json:"event_type"`
	Version    int       `json:"version"`
	OccurredAt time.Time `json:"occurred_at"`
}

// NewMeta returns a fresh envelope with a unique, time-ordered id.
func NewMeta(eventType string, at time.Time) Meta {
	return Meta{EventID: uuid.Must(uuid.NewV7()).String(), EventType: eventType, Version: Version, OccurredAt: at.UTC()}
}

// ValidEventID reports whether id can be an event id: a UUID. A consumer
// dead-letters an event whose id is not one at once, instead of failing on
// it in the database attempt after attempt.
func ValidEventID(id string) bool {
	_, err := uuid.Parse(id)
	return err == nil
}

// Item is one line of an order.
type Item struct {
	ProductID int64        `json:"product_id"`
	Quantity  int          `json:"quantity"`
	Price     money.Amount `json:"price"`
}

// OrderCreated is published by the order service when an order was accepted.
type OrderCreated struct {
	Meta
	OrderID     int64        `json:"order_id"`
	UserID      int64        `json:"user_id"`
	UserEmail   string       `json:"user_email"`
	TotalAmount money.Amount `json:"total_amount"`
	Items       []Item       `json:"items"`
}

// OrderCancelled is published by the order service when the saga gave up
// on an order (no payment result after its retries). The payment service
// refunds a charge that arrives for it anyway; the email service tells the
// customer.
type OrderCancelled struct {
	Meta
	OrderID     int64        `json:"order_id"`
	UserID      int64        `json:"user_id"`
	UserEmail   string       `json:"user_email"`
	TotalAmount money.Amount `json:"total_amount"`
	Reason      string       `json:"reason"`
}

// PaymentProcessed is published by the payment service when a payment succeeded.
type PaymentProcessed struct {
	Meta
	PaymentID   int64        `json:"payment_id"`
	OrderID     int64        `json:"order_id"`
	UserID      int64        `json:"user_id"`
	UserEmail   string       `json:"user_email"`
	TotalAmount money.Amount `json:"total_amount"`
	Items       []Item       `json:"items"`
}

// PaymentFailed is published by the payment service when a payment was declined.
type PaymentFailed struct {
	Meta
	PaymentID   int64        `json:"payment_id"`
	OrderID     int64        `json:"order_id"`
	UserID      int64        `json:"user_id"`
	UserEmail   string       `json:"user_email"`
	TotalAmount money.Amount `json:"total_amount"`
	Items       []Item       `json:"items"`
	Reason      string       `json:"reason"`
}

// PaymentRefunded is published by the payment service when it gave back a
// charge, because the order had been cancelled before the charge was known.
type PaymentRefunded struct {
	Meta
	PaymentID   int64        `json:"payment_id"`
	OrderID     int64        `json:"order_id"`
	TotalAmount money.Amount `json:"total_amount"`
	Reason      string       `json:"reason"`
}

// Mail kinds carried by EmailSent and EmailFailed.
const (
	MailConfirmation  = "order_confirmation"
	MailPaymentFailed = "payment_failed"
	MailCancelled     = "order_cancelled"
)

// EmailSent is published by the email service after the SMTP server accepted a mail.
type EmailSent struct {
	Meta
	OrderID   int64  `json:"order_id"`
	Kind      string `json:"kind"`
	To        string `json:"to"`
	MessageID string `json:"message_id"`
}

// EmailFailed is published by the email service when the SMTP server refused
// a mail for good (a 5xx reply), or kept it from being delivered past the
// retry window: the order's timeline says the mail could not be delivered.
type EmailFailed struct {
	Meta
	OrderID   int64  `json:"order_id"`
	Kind      string `json:"kind"`
	To        string `json:"to"`
	MessageID string `json:"message_id"`
	Reason    string `json:"reason"` // the SMTP reply, e.g. "550 5.1.1 mailbox unavailable"
}

// Event is what a publisher can send.
type Event interface {
	EventMeta() Meta
	RoutingKey() string
}

// EventMeta returns the envelope.
func (m Meta) EventMeta() Meta { return m }

// RoutingKey of the event.
func (OrderCreated) RoutingKey() string { return RouteOrderCreated }

// RoutingKey of the event.
func (OrderCancelled) RoutingKey() string { return RouteOrderCancelled }

// RoutingKey of the event.
func (PaymentRefunded) RoutingKey() string { return RoutePaymentRefunded }

// RoutingKey of the event.
func (EmailFailed) RoutingKey() string { return RouteEmailFailed }

// RoutingKey of the event.
func (PaymentProcessed) RoutingKey() string { return RoutePaymentProcessed }

// RoutingKey of the event.
func (PaymentFailed) RoutingKey() string { return RoutePaymentFailed }

// RoutingKey of the event.
func (EmailSent) RoutingKey() string { return RouteEmailSent }

// Message is an encoded event, ready for the outbox or the broker.
type Message struct {
	ID         string
	Type       string
	RoutingKey string
	Body       []byte
	// TraceContext is the encoded trace context the message is published
	// under (telemetry.EncodeTraceContext; the outbox row's trace_context):
	// "" publishes under the caller's context.
	TraceContext string
}

// Encode turns an event into a message.
func Encode(e Event) (Message, error) {
	m := e.EventMeta()
	if m.EventID == "" || m.EventType == "" {
		return Message{}, fmt.Errorf("encode %T: missing event id or type", e)
	}
	body, err := json.Marshal(e)
	if err != nil {
		return Message{}, fmt.Errorf("encode %s: %w", m.EventType, err)
	}
	return Message{ID: m.EventID, Type: m.EventType, RoutingKey: e.RoutingKey(), Body: body}, nil
}
