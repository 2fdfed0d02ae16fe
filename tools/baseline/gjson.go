//go:build linux

package baseline

import (
	"errors"

	"github.com/tidwall/gjson"
)

// ListenGJSON is Listen with DecodeGJSON: the same sockets, one datagram
// per read, and the same rules; only the JSON is read with gjson, as a
// user who reaches for a faster parser writes it.
func ListenGJSON(addr string, n, rcvbuf int) (*Server, error) {
	return ListenWith(addr, n, rcvbuf, DecodeGJSON)
}

var (
	errInvalidJSON = errors.New("not valid JSON")
	errFieldType   = errors.New("field of the wrong type")
)

// DecodeGJSON reads user_id, amount, event_type, ts and ip with gjson
// (GetBytes: the strings are copies, safe after the buffer is reused).
// As DecodeJSON, it rejects what is not JSON, fields of the wrong type and
// an event without user_id.
func DecodeGJSON(b []byte, ev *Event) error {
	if !gjson.ValidBytes(b) {
		return errInvalidJSON
	}
	user := gjson.GetBytes(b, "user_id")
	if user.Type != gjson.String || user.Str == "" {
		if user.Exists() && user.Type != gjson.String {
			return errFieldType
		}
		return errNoUser
	}
	ev.UserID = user.Str
	var ok bool
	if ev.Amount, ok = number(gjson.GetBytes(b, "amount")); !ok {
		return errFieldType
	}
	var ts float64
	if ts, ok = number(gjson.GetBytes(b, "ts")); !ok {
		return errFieldType
	}
	ev.TS = int64(ts)
	if ev.EventType, ok = str(gjson.GetBytes(b, "event_type")); !ok {
		return errFieldType
	}
	if ev.IP, ok = str(gjson.GetBytes(b, "ip")); !ok {
		return errFieldType
	}
	return nil
}

// number is r's value if it is a number or absent (0).
func number(r gjson.Result) (float64, bool) {
	switch r.Type {
	case gjson.Number:
		return r.Num, true
	case gjson.Null:
		return 0, true
	}
	return 0, false
}

// str is r's value if it is a string or absent ("").
func str(r gjson.Result) (string, bool) {
	switch r.Type {
	case gjson.String:
		return r.Str, true
	case gjson.Null:
		return "", true
	}
	return "", false
}
