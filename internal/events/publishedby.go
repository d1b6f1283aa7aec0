package events

import amqp "github.com/rabbitmq/amqp091-go"

// HeaderPublishedBy carries, on a message a service moved itself (to a
// retry or dead-letter queue, or back by a replay), the validated user it
// was first published by. It is believed only on a message whose user_id is
// the moving service's own user, which RabbitMQ lets no one else claim.
const HeaderPublishedBy = "x-published-by"

// publishedBy returns the RabbitMQ user that published d as the broker
// validated it (the user_id property: RabbitMQ refuses a publish whose
// user_id is not the connection's user), looking through the moves of the
// service whose user is self. Empty when the publisher set no user id.
func publishedBy(d amqp.Delivery, self string) string {
	if self != "" && d.UserId == self {
		if by, ok := d.Headers[HeaderPublishedBy].(string); ok {
			return by
		}
	}
	return d.UserId
}

// userOf returns the user of an AMQP URL as the client logs in with it
// (guest when the URL names none), or "" when the URL cannot be read.
func userOf(amqpURL string) string {
	u, err := amqp.ParseURI(amqpURL)
	if err != nil {
		return ""
	}
	return u.Username
}

// connUser returns the user conn logged in as.
func connUser(conn *amqp.Connection) string {
	for _, a := range conn.Config.SASL {
		if p, ok := a.(*amqp.PlainAuth); ok {
			return p.Username
		}
	}
	return ""
}
