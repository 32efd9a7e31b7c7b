package streams

import "github.com/nats-io/nats.go/jetstream"

// Notification channels are control-plane state: they live on CONTROL
// (written by services/notifier), one subject per channel whose last
// message is the channel's full state, so writes are compare-and-set on
// the subject's sequence and the channel history is part of the audit log.
const (
	// ChannelChanged carries a channel's full state after a change
	// (payload: the notifier's channel record; credentials sealed).
	ChannelChanged = "channel_changed"
	// AllChannelChanges filters every channel change of every tenant.
	AllChannelChanges = "control.v1." + ChannelChanged + ".>"
)

// ChannelSubject holds a notification channel's state history.
func ChannelSubject(tenant, id string) string {
	return subject("control", ChannelChanged, tenant, id)
}

// Notifier stream and its subjects, owned by services/notifier.
const (
	Notifier = "NOTIFIER"
	// DeliveryScheduled is a delivery job: one signal for one channel,
	// with its attempt number and the earliest time it may run. One
	// subject per delivery, so the last message is the pending attempt
	// and a retry is a compare-and-set on it.
	DeliveryScheduled = "delivery_scheduled"
	// DeliveryAttempted records one attempt (status code, latency, what
	// happens next); the deliveries table projects it.
	DeliveryAttempted = "delivery_attempted"
	// DeliveryFinished marks a delivery delivered or dead-lettered; a
	// replay is allowed only after it.
	DeliveryFinished = "delivery_finished"
	// ChannelHealthChanged carries a channel's health after it flipped;
	// one subject per channel, so its last message is the current health.
	ChannelHealthChanged = "channel_health_changed"

	// AllDeliveriesScheduled filters every delivery job.
	AllDeliveriesScheduled = "notifier.v1." + DeliveryScheduled + ".>"
	// AllDeliveryAttempts filters every recorded attempt.
	AllDeliveryAttempts = "notifier.v1." + DeliveryAttempted + ".>"
)

// DeliveryScheduledSubject holds a delivery's job history.
func DeliveryScheduledSubject(tenant, deliveryID string) string {
	return subject("notifier", DeliveryScheduled, tenant, deliveryID)
}

// DeliveryAttemptedSubject is where attempts of a channel are recorded.
func DeliveryAttemptedSubject(tenant, channelID string) string {
	return subject("notifier", DeliveryAttempted, tenant, channelID)
}

// DeliveryFinishedSubject holds a delivery's final outcomes.
func DeliveryFinishedSubject(tenant, deliveryID string) string {
	return subject("notifier", DeliveryFinished, tenant, deliveryID)
}

// ChannelHealthSubject holds a channel's health history.
func ChannelHealthSubject(tenant, channelID string) string {
	return subject("notifier", ChannelHealthChanged, tenant, channelID)
}

// NotifierConfig defines the NOTIFIER stream, owned by services/notifier.
// It must keep jobs longer than the longest retry schedule; IngestMaxAge
// (30 days by default) does.
func NotifierConfig(o Options) jetstream.StreamConfig {
	o = o.withDefaults()
	sc := o.base(Notifier, "Notification deliveries: jobs, attempts, outcomes, channel health", "notifier")
	sc.MaxAge = o.IngestMaxAge
	sc.AllowDirect = true
	return sc
}
