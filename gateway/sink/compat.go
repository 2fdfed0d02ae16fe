package sink

// Temporary: what gateway/config.go used of the sink specs before the one
// validator; removed with the config's own sink checks.

func ForeignField(typ string, k Kafka, n NATS) (string, string) { return foreignField(typ, k, n) }
func NormalizeKeyed(sp *Spec) (string, string)                  { return normalizeKeyed(sp) }
func Normalize(i int, sp Spec) (Spec, error)                    { return normalizeSink(i, sp) }

const (
	DefaultDelivery    = sinkDefaultDelivery
	KafkaDefaultLinger = kafkaDefaultLinger
)
