package events

// The topology is part of the contract: every queue any service will ever
// consume from, with its bindings. Every service declares all of it at start
// (with each queue's retry and dead-letter queues), so an event published
// before its consumer first started still reaches that consumer's queue.

// Queue names.
const (
	// QueuePayment is the payment service's queue: orders to charge and
	// orders cancelled by the saga (whose late charge must be refunded).
	QueuePayment = "payment.order-created"
	// QueueEmail is the email service's queue of mails to send.
	QueueEmail = "email.payment-results"
	// QueueOrderSaga is the order service's queue of what happened to its
	// orders downstream: payment results, refunds and mail outcomes.
	QueueOrderSaga = "order.saga-events"
)

// QueueSpec is one consumer queue and the routing keys bound to it.
type QueueSpec struct {
	Name     string
	Bindings []string
}

// Topology lists every consumer queue of the system.
var Topology = []QueueSpec{
	{Name: QueuePayment, Bindings: []string{RouteOrderCreated, RouteOrderCancelled}},
	{Name: QueueEmail, Bindings: []string{RoutePaymentProcessed, RoutePaymentFailed, RouteOrderCancelled}},
	{Name: QueueOrderSaga, Bindings: []string{RoutePaymentProcessed, RoutePaymentFailed, RoutePaymentRefunded, RouteEmailSent, RouteEmailFailed}},
}

// QueueBindings returns the routing keys bound to the named queue, or nil.
func QueueBindings(name string) []string {
	for _, q := range Topology {
		if q.Name == name {
			return q.Bindings
		}
	}
	return nil
}

// RetryLevels is how many delay queues each consumer queue has: retry N
// waits in <queue>.retry.N (N from 1 to RetryLevels; later retries reuse
// the last level). It is fixed by the contract, not by a service's
// CONSUMER_MAX_ATTEMPTS, so that every service declares the same queues.
const RetryLevels = 4

// DeliveryLimit is the x-delivery-limit of the main (quorum) queues: a
// message handed back this many times without being settled (the consumer
// crashing on it again and again) goes to the queue's dead-letter queue
// instead of circling forever. Retries do not count: they are new messages.
const DeliveryLimit = 50

// QueueNames lists every queue of the topology: each consumer queue, its
// retry queues and its dead-letter queue.
func QueueNames() []string {
	var names []string
	for _, q := range Topology {
		names = append(names, q.Name)
		for n := 1; n <= RetryLevels; n++ {
			names = append(names, RetryQueue(q.Name, n))
		}
		names = append(names, DeadLetterQueue(q.Name))
	}
	return names
}

// MainQueueArgs are the arguments of a consumer queue: a quorum queue whose
// messages past the delivery limit are dead-lettered (at least once) to its
// dead-letter queue through the default exchange.
func MainQueueArgs(name string) map[string]any {
	return map[string]any{
		"x-queue-type":              "quorum",
		"x-delivery-limit":          int32(DeliveryLimit),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": DeadLetterQueue(name),
		"x-dead-letter-strategy":    "at-least-once",
		"x-overflow":                "reject-publish",
	}
}

// RetryQueueArgs are the arguments of a delay queue of the consumer queue
// name: a classic queue whose messages expire (per-message TTL) back onto
// name through the default exchange.
func RetryQueueArgs(name string) map[string]any {
	return map[string]any{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name}
}
