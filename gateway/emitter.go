package gateway

import (
	"sync"
	"time"

	"github.com/xgate/xgate/engine"
	"github.com/xgate/xgate/gateway/sink"
)

// emitter is the goroutine that reports every_slide window aggregates
// (engine emit.go) to the sinks of what: aggregates, through a sink Writer
// of its own: the workers never wait for it, and a full sink applies its
// on_full policy to its records as to any.
//
// It sleeps until the next slide boundary only while some every_slide
// window saw an event since its last report (engine.Emitter.Due); else it
// waits for the engine's wake-up (the first event of a step), so an idle
// gateway does no periodic work. The walk after a boundary must finish
// within one slide (the window keeps one spare segment); it reads the
// table without locks, at most emit_max_keys records per slide.
type emitter struct {
	m    *engine.Emitter
	sw   *sink.Writer
	add  func(*engine.Aggregate) // sw.AddAggregate, made once
	quit chan struct{}
	done chan struct{}
	once sync.Once
	ran  bool
}

func newEmitter(m *engine.Emitter, sw *sink.Writer) *emitter {
	return &emitter{m: m, sw: sw, add: sw.AddAggregate, quit: make(chan struct{}), done: make(chan struct{})}
}

// start runs the loop on its own goroutine.
func (e *emitter) start() {
	e.ran = true
	go e.run()
}

func (e *emitter) run() {
	defer close(e.done)
	clk := e.m.Clock()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		now := clk.Nanotime()
		e.m.Emit(now, e.add)
		e.sw.FlushAll()
		var tick <-chan time.Time
		if due, ok := e.m.Due(); ok {
			// Due is the boundary itself; a walk there finds the window
			// complete (Emit reads the clock's step at that instant).
			timer.Reset(time.Duration(max(0, due-now)))
			tick = timer.C
		}
		select {
		case <-e.quit:
			return
		case <-e.m.Wake():
			timer.Stop()
		case <-tick:
		}
	}
}

// stop ends the loop after a last report of the windows due by now (the
// workers have stopped), and hands its records to the sinks. Call it
// before the sinks close; safe without start and more than once.
func (e *emitter) stop() {
	e.once.Do(func() {
		close(e.quit)
		if e.ran {
			<-e.done
		}
		e.m.Emit(e.m.Clock().Nanotime(), e.add)
		e.sw.FlushAll()
	})
}
