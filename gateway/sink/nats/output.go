// Package nats is the NATS JetStream output of the sinks: one message per
// event, published asynchronously with JetStream acknowledgements (nats.go's
// jetstream package). The sink (gateway/sink) builds it from its Spec.NATS
// (Config) and drives it through the contract of gateway/sink/output.
//
// Message contract (as the Kafka sink's record contract, see
// gateway/sink/kafka):
//
//	subject   the subject template with {key}, {verdict} and {rule}
//	          replaced; in the replacement, characters a subject token
//	          cannot hold (space and other control or blank characters,
//	          Unicode's included, '.', '*', '>') and bytes that are not
//	          UTF-8 become '_', an empty value becomes "_", and a key or
//	          rule is cut at 256 bytes first; a subject is at most 2048
//	          bytes (a template that could make a longer one is refused)
//	data      the original event bytes, exactly as received
//	headers   verdict, rule, gateway, rx_ns (as for Kafka; with meta also
//	          src, queue, rx_time), and
//	          Nats-Msg-Id: <gateway id>-<start time>-<sequence>, unique per
//	          event and the same on every retry of it, so that JetStream's
//	          duplicate window drops a retry of a message it already stored
//	          (the start time, in base 36 ns, keeps ids of a restarted
//	          gateway apart)
//
// Delivery. The writer goroutine publishes each record of a slab with
// PublishMsgAsync; the ack and error handlers (nats.go goroutines) count
// it. A publish that fails — no ack within ack_timeout, the connection
// lost (nats.go fails every pending ack when it starts to reconnect), the
// stream's error, too many acks pending — is retried by the retry
// goroutine with the same message id, once connected again, until
// delivery_timeout has passed since the first try: then the record is
// Failed. While disconnected the writer hands records straight to the
// retry goroutine instead of filling nats.go's reconnect buffer. A retried
// message may land after later messages of the same key. max_pending
// bounds the publishes awaiting an ack, and the slab pool (held until
// every record of a slab is resolved) bounds the records buffered and in
// flight: a slow or absent server makes the workers drop and count, or
// block up to block_timeout.
package nats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xgate/xgate/gateway/sink/output"
)

// natsOutput publishes a sink's records to a JetStream stream.
//
// Concurrency: Write and Finish run on the sink's writer goroutine; onAck
// and onErr on nats.go's goroutines (ack handler, ack timers, the
// reconnect watcher); retryLoop on its own goroutine; Abort on Close's.
// live (under mu) maps the *nats.Msg the handlers get back to its record
// until the record is resolved; a record is resolved exactly once, by
// whichever of onAck and fail takes it out of live first (reports about it
// after that find nothing). Until then it is published, awaiting an ack,
// or in the retry channel, there at most once (natsRec.queued). A write's
// records are filled before any of them is published; the slab is
// released only after all of them are resolved.
type natsOutput struct {
	cnt     output.Counts
	nc      *nats.Conn
	js      jetstream.JetStream
	tmpl    subjectTemplate
	gw      string
	ids     output.IDGen // message ids (writer goroutine only)
	deliver time.Duration

	mu   sync.Mutex
	live map[*nats.Msg]*natsRec

	output.Acks
	retry      chan *natsRec // room for every record of the pool
	closing    atomic.Bool   // abort: fail instead of retrying
	abortedAt  atomic.Int64  // when abort was called (ns since the epoch), 0 before
	ackTimeout time.Duration
	quit       chan struct{}
	retried    chan struct{}     // closed when retryLoop has ended
	rules      map[string]string // rule names as strings, so that they are made once (writer only)
	scratch    []byte            // subject being built (writer only)
	idBuf      []byte            // message id being built (writer only)
}

var _ output.Output = (*natsOutput)(nil)

// natsRec is one record of a slab as a NATS message.
type natsRec struct {
	msg      nats.Msg
	vals     [8]string // header values, the backing of msg.Header's slices
	ns       *natsSlab
	deadline int64 // nanotime after which it is no longer retried
	failedAt int64 // nanotime of its last failed try
	size     int
	idx      int // its index in the slab
	// queued: in the retry channel (set by retryLater, cleared by the
	// retry goroutine when it takes the record), so that a record is there
	// at most once even when two paths report the same failed try.
	queued atomic.Bool
}

// natsSlab is the per-slab state of a natsOutput (output.Slab.State).
type natsSlab struct {
	output.Left
}

// New connects to the servers of n and checks its stream (making it if
// asked to); with sk.Spooled it starts while no server is reachable.
func New(sk output.Sink, n Config) (output.Output, error) {
	tmpl, err := parseSubjectTemplate(n.Subject)
	if err != nil {
		return nil, err
	}
	o := &natsOutput{
		cnt:        sk.Counts,
		tmpl:       tmpl,
		gw:         sk.GatewayID,
		ids:        output.NewIDGen(sk.GatewayID),
		deliver:    sk.DeliveryTimeout,
		ackTimeout: n.AckTimeout,
		live:       map[*nats.Msg]*natsRec{},
		retry:      make(chan *natsRec, sk.Slabs*sk.SlabRecords),
		quit:       make(chan struct{}),
		retried:    make(chan struct{}),
		rules:      map[string]string{},
	}
	opts := []nats.Option{
		nats.Name("xgate " + sk.GatewayID),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.Timeout(5 * time.Second),
		nats.NoCallbacksAfterClientClose(),
	}
	if sk.TLS != nil {
		opts = append(opts, nats.Secure(sk.TLS))
	}
	// With a spool the sink starts while no server is reachable (a
	// restart during an outage): records go to the spool, and the stream
	// is checked once the first connection is made.
	var unchecked atomic.Bool
	if sk.Spooled {
		opts = append(opts, nats.RetryOnFailedConnect(true), nats.ConnectHandler(func(*nats.Conn) {
			if unchecked.CompareAndSwap(true, false) {
				go func() {
					if err := o.checkStream(n, strings.Join(n.URLs, ",")); err != nil {
						o.NoteError(err)
					}
				}()
			}
		}))
	}
	switch {
	case n.User != "":
		pass, err := output.Secret(n.Password, n.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("nats password: %w", err)
		}
		opts = append(opts, nats.UserInfo(n.User, pass))
	case n.TokenFile != "":
		tok, err := output.Secret("", n.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("nats token: %w", err)
		}
		opts = append(opts, nats.Token(tok))
	case n.CredsFile != "":
		opts = append(opts, nats.UserCredentials(n.CredsFile))
	}
	urls := strings.Join(n.URLs, ",")
	// Connect on a goroutine of its own, so that every connection of the
	// client, reconnects included (nats.go's goroutines), is made from the
	// process's network namespace, not from a thread the caller may have
	// moved into another one (as test hosts do); franz-go dials from its
	// own goroutines anyway.
	connected := make(chan error, 1)
	go func() {
		var err error
		o.nc, err = nats.Connect(urls, opts...)
		connected <- err
	}()
	if err := <-connected; err != nil {
		return nil, fmt.Errorf("nats servers %s: %w", urls, err)
	}
	o.js, err = jetstream.New(o.nc,
		jetstream.WithPublishAsyncMaxPending(n.MaxPending),
		jetstream.WithPublishAsyncTimeout(n.AckTimeout),
		jetstream.WithPublishAsyncAckHandler(o.onAck),
		jetstream.WithPublishAsyncErrHandler(o.onErr),
	)
	switch {
	case err != nil:
	case sk.Spooled && !o.nc.IsConnected():
		unchecked.Store(true)
		if o.nc.IsConnected() && unchecked.CompareAndSwap(true, false) { // connected meanwhile
			err = o.checkStream(n, urls)
		}
	default:
		err = o.checkStream(n, urls)
	}
	if err != nil {
		o.nc.Close()
		return nil, err
	}
	go o.retryLoop()
	return o, nil
}

// checkStream makes sure the stream exists (creating it if asked to) and
// takes the template's subjects, so that a typo is an error at start, not
// a stream of failed messages.
func (o *natsOutput) checkStream(n Config, urls string) error {
	ctx, cancel := context.WithTimeout(context.Background(), natsStartTimeout)
	defer cancel()
	st, err := o.js.Stream(ctx, n.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound) && n.CreateStream:
		st, err = o.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:     n.Stream,
			Subjects: n.StreamSubjects,
			Storage:  jetstream.FileStorage,
		})
		if err != nil {
			return fmt.Errorf("create stream %s (subjects %v) on %s: %w", n.Stream, n.StreamSubjects, urls, err)
		}
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("stream %s does not exist on %s: create it or set create_stream: true", n.Stream, urls)
	case err != nil:
		return fmt.Errorf("stream %s on %s: %w", n.Stream, urls, err)
	}
	subjects := st.CachedInfo().Config.Subjects
	if len(subjects) == 0 {
		subjects = []string{n.Stream} // a stream without subjects takes its name
	}
	if w := o.tmpl.wildcard(); !subjectsCover(subjects, w) {
		return fmt.Errorf("stream %s (subjects %v) does not take every subject of %s: add %s to its subjects", n.Stream, subjects, n.Subject, w)
	}
	return nil
}

// state returns sl's natsSlab, making it on the slab's first use.
func (o *natsOutput) state(sl *output.Slab) *natsSlab {
	if ns, ok := sl.State.(*natsSlab); ok {
		return ns
	}
	ns := &natsSlab{}
	ns.Slab = sl
	sl.State = ns
	return ns
}

// Write publishes the records of sl. Their messages are new for every
// write, not reused with the slab: nats.go hands a message back to the
// handlers, and a late report about an old publish must never find (or
// race with) a record of the slab's next round.
func (o *natsOutput) Write(sl *output.Slab) {
	ns := o.state(sl)
	n := len(sl.Ends)
	recs := make([]natsRec, n)
	o.Handed(&ns.Left, n)
	deadline := nanotime() + int64(o.deliver)
	var kr output.Record
	from := 0
	o.mu.Lock()
	for i, end := range sl.Ends {
		output.Parse(sl.Buf[from:end], &kr)
		from = int(end)
		r := &recs[i]
		r.ns = ns
		r.msg.Header = make(nats.Header, len(r.vals))
		o.scratch = o.tmpl.appendSubject(o.scratch[:0], kr.Key, output.Verdicts[kr.Verdict], kr.Rule)
		// The message id: a record from the spool keeps the one it was
		// given when first sent or spooled (so that the stream drops a
		// replay of what it has); a new record takes the next, which the
		// spool keeps should the record fail.
		var id string
		if sl.Replay {
			id = string(sl.IDs.At(i))
		} else {
			o.idBuf = o.ids.Next(o.idBuf[:0])
			id = string(o.idBuf)
			if sl.IDs != nil {
				sl.IDs.Add(o.idBuf)
			}
		}
		r.idx = i
		r.msg.Subject = string(o.scratch)
		r.msg.Data = kr.Value
		r.vals = [8]string{verdictStrings[kr.Verdict], o.rule(kr.Rule), o.gw, string(kr.RxText), id}
		h := r.msg.Header
		h[output.HdrVerdict] = r.vals[0:1:1]
		h[output.HdrRule] = r.vals[1:2:2]
		h[output.HdrGateway] = r.vals[2:3:3]
		h[output.HdrRxNs] = r.vals[3:4:4]
		h[jetstream.MsgIDHeader] = r.vals[4:5:5]
		if kr.Src != nil {
			r.vals[5] = string(kr.Src)
			h[output.HdrSrc] = r.vals[5:6:6]
		}
		if kr.Queue != nil {
			r.vals[6] = string(kr.Queue)
			h[output.HdrQueue] = r.vals[6:7:7]
		}
		if kr.RxTime != nil {
			r.vals[7] = string(kr.RxTime)
			h[output.HdrRxTime] = r.vals[7:8:8]
		}
		r.deadline, r.failedAt = deadline, 0
		r.size = len(kr.Value)
		o.live[&r.msg] = r
	}
	o.mu.Unlock()
	// Registered before any is published: an ack may come back before
	// PublishMsgAsync returns.
	for i := range n {
		r := &recs[i]
		if !o.nc.IsConnected() {
			o.retryLater(r, nats.ErrDisconnected)
			continue
		}
		if _, err := o.js.PublishMsgAsync(&r.msg); err != nil {
			o.retryLater(r, err)
		}
	}
}

// NewMsgID appends the next message id to b (writer goroutine only): the
// spooler's, for the records it stores.
func (o *natsOutput) NewMsgID(b []byte) []byte { return o.ids.Next(b) }

// verdictStrings are output.Verdicts as strings.
var verdictStrings = func() (s [256]string) {
	for i, v := range output.Verdicts {
		s[i] = string(v)
	}
	return s
}()

// rule returns b as a string, made once per rule name (a program has a
// few; past 1024 names, it stops remembering).
func (o *natsOutput) rule(b []byte) string {
	if s, ok := o.rules[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(o.rules) < 1024 {
		o.rules[s] = s
	}
	return s
}

// retryLater hands r to the retry goroutine. It never blocks: the
// channel has room for every record of the pool, and a record is in it at
// most once.
func (o *natsOutput) retryLater(r *natsRec, err error) {
	o.NoteError(err)
	if !r.queued.CompareAndSwap(false, true) {
		return
	}
	r.failedAt = nanotime()
	o.retry <- r
}

// onAck is the ack handler: the message is stored (or was already: a
// duplicate ack for a retry of a stored message counts once, here).
func (o *natsOutput) onAck(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
	o.mu.Lock()
	r := o.live[m]
	delete(o.live, m)
	o.mu.Unlock()
	if r == nil {
		return
	}
	o.cnt.Records.Add(1)
	o.cnt.Bytes.Add(uint64(r.size))
	o.resolved(r)
}

// onErr is the error handler of an async publish: a timeout, a lost
// connection, an error from the stream. The record is retried.
func (o *natsOutput) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	o.mu.Lock()
	r := o.live[m]
	o.mu.Unlock()
	if r != nil {
		o.retryLater(r, err)
	}
}

// fail counts r as failed (unless it was resolved already).
func (o *natsOutput) fail(r *natsRec) {
	o.mu.Lock()
	_, ok := o.live[&r.msg]
	delete(o.live, &r.msg)
	o.mu.Unlock()
	if !ok {
		return
	}
	o.cnt.Errors.Add(1)
	if !r.ns.Slab.SpoolFailed(r.idx) { // with a spool, it goes back there
		o.cnt.Failed.Add(1)
	}
	o.resolved(r)
}

func (o *natsOutput) resolved(r *natsRec) {
	o.Settled(&r.ns.Left)
}

// retryLoop publishes failed records again, in the order they failed,
// natsRetryWait after their failure and once connected, until their
// deadline; then (or once closing) it counts them failed.
func (o *natsOutput) retryLoop() {
	defer close(o.retried)
	for {
		var r *natsRec
		select {
		case r = <-o.retry:
		case <-o.quit:
			return
		}
		for {
			now := nanotime()
			if o.closing.Load() || now > r.deadline {
				r.queued.Store(false)
				o.fail(r)
				break
			}
			if wait := r.failedAt + int64(natsRetryWait) - now; wait > 0 || !o.nc.IsConnected() {
				select {
				case <-time.After(max(time.Duration(wait), 10*time.Millisecond)):
				case <-o.quit: // cannot happen while records are pending
					return
				}
				continue
			}
			r.queued.Store(false)
			if _, err := o.js.PublishMsgAsync(&r.msg); err != nil {
				o.retryLater(r, err) // back to the end of the line
			}
			break
		}
	}
}

// Finish waits until every record is acknowledged or failed: at most
// delivery_timeout plus ack_timeout after its first try; after Abort, at
// most ack_timeout (the publishes awaiting an ack fail by their timers).
// Should nats.go not report a publish at all, Finish counts the records
// still unresolved failed after that much longer, so that it always ends.
func (o *natsOutput) Finish() error {
	grace := o.deliver + 2*o.ackTimeout + time.Second
	deadline := time.Now().Add(grace)
	for o.InFlight() > 0 {
		if at := o.abortedAt.Load(); at != 0 {
			if d := time.Unix(0, at).Add(2*o.ackTimeout + time.Second); d.Before(deadline) {
				deadline = d
			}
		}
		if time.Now().After(deadline) {
			o.GiveUp()
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(o.quit)
	<-o.retried
	o.nc.Close()
	if n := o.InFlight(); n > 0 {
		return fmt.Errorf("%d records unresolved after %v", n, grace)
	}
	return nil
}

// Down reports a lost connection (nats.go reconnecting); not after Abort
// or Close, which close it on purpose.
func (o *natsOutput) Down() bool {
	return !o.closing.Load() && o.nc.Status() != nats.CONNECTED && !o.nc.IsClosed()
}

// GiveUp (spool) fails every record not yet acknowledged at once, so that
// it goes to the spool; the retry goroutine fails what it holds, and
// reports that come later find nothing.
func (o *natsOutput) GiveUp() {
	o.closing.Store(true)
	o.mu.Lock()
	stuck := make([]*natsRec, 0, len(o.live))
	for _, r := range o.live {
		stuck = append(stuck, r)
	}
	o.mu.Unlock()
	for _, r := range stuck {
		o.fail(r)
	}
}

// Abort stops retries and closes the connection: pending publishes fail
// by their ack timeout, and Finish returns after that.
func (o *natsOutput) Abort() {
	if o.closing.CompareAndSwap(false, true) {
		o.abortedAt.Store(time.Now().UnixNano())
		o.nc.Close()
	}
}

func nanotime() int64 { return time.Now().UnixNano() }
