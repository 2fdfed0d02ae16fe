package sink

import (
	"time"

	"github.com/xgate/xgate/gateway/sink/kafka"
	"github.com/xgate/xgate/gateway/sink/nats"
	"github.com/xgate/xgate/gateway/sink/output"
)

// asyncOutput is the sinkOutput of a Kafka or NATS sink: it drives an
// output.Output, which hands records to a client that acknowledges them
// later. Its write shows the output the slab as an output.Slab and keeps
// the slab: the output releases it once every record of it is
// acknowledged or failed, which sends it on back, and only then does the
// writer goroutine put it back on its owner's free ring (the writer stays
// the free ring's only producer). back has room for every slab of the
// sink, so that a release never blocks.
type asyncOutput struct {
	out  output.Output
	back chan *slab
}

var _ sinkOutput = (*asyncOutput)(nil)

// newAsyncOutput makes the output of the Kafka or NATS sink sk (after its
// slabs and spool).
func newAsyncOutput(sk *sink, sp Spec) (*asyncOutput, error) {
	env := output.Sink{
		Slabs:       sk.slabs,
		SlabRecords: sk.slabRecords(),
		Counts: output.Counts{
			Records: &sk.cnt.records, Bytes: &sk.cnt.bytes,
			Errors: &sk.cnt.errors, Failed: &sk.cnt.failed,
		},
		GatewayID:       sp.GatewayID,
		DeliveryTimeout: sp.DeliveryTimeout,
		Spooled:         sp.Spool.Path != "",
	}
	if sp.TLS.On() {
		var err error
		if env.TLS, err = sp.TLS.config(); err != nil {
			return nil, err
		}
	}
	var out output.Output
	var err error
	switch sp.Type {
	case "kafka":
		out, err = kafka.New(env, sp.Kafka)
	case "nats":
		out, err = nats.New(env, sp.NATS)
	}
	if err != nil {
		return nil, err
	}
	return &asyncOutput{out: out, back: make(chan *slab, sk.slabs)}, nil
}

// write hands sl to the output with the spool's state of its records.
func (a *asyncOutput) write(sl *slab) {
	v := sl.view
	if v == nil {
		v = output.NewSlab(func() { a.back <- sl })
		sl.view = v
	}
	v.Buf, v.Ends, v.IDs, v.Replay, v.Failed, v.Failing = sl.buf, sl.ends, nil, false, nil, nil
	if ss := sl.spool; ss != nil {
		v.IDs, v.Replay, v.Failed, v.Failing = &ss.ids, ss.replay, ss.failed, ss.failing
	}
	a.out.Write(v)
}

func (a *asyncOutput) afterRound(int64)    {}
func (a *asyncOutput) idle(int64)          {}
func (a *asyncOutput) tick() time.Duration { return 0 }
func (a *asyncOutput) finish() error       { return a.out.Finish() }
func (a *asyncOutput) abort()              { a.out.Abort() }

// done is where the slabs the output released come back.
func (a *asyncOutput) done() <-chan *slab { return a.back }

func (a *asyncOutput) inFlight() uint64    { return a.out.InFlight() }
func (a *asyncOutput) lastError() error    { return a.out.LastError() }
func (a *asyncOutput) noteError(err error) { a.out.NoteError(err) }

// down reports whether the output reaches no broker now.
func (a *asyncOutput) down() bool { return a.out.Down() }
