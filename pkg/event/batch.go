package event

import (
	"bytes"
	"strings"
	"time"
)

// Item is one event of a multi-event request, not decoded yet.
type Item struct {
	raw []byte
	// valid says raw is known to be valid JSON (split from a batch body
	// that was validated whole), so Decode need not validate it again.
	valid bool
}

// NewItem wraps one event's JSON; its Decode validates it.
func NewItem(raw []byte) Item { return Item{raw: raw} }

// Raw is the item's JSON, as received.
func (it Item) Raw() []byte { return it.raw }

// DecodeFor decodes and validates the item as DecodeFor does, except
// that the event's Payload may be a slice of the item's bytes (the batch
// body) rather than a copy: they must not change while the event is in
// use.
func (it Item) DecodeFor(lim Limits, now time.Time, prefix, defaultAgent string) (Event, int64, error) {
	return decode(it.raw, it.valid, true, lim, now, prefix, defaultAgent)
}

// SplitBatch returns the events of a batch body, {"events":[...]} or a
// bare array, exactly as json.Unmarshal of the body into a
// []json.RawMessage (bare array) or into struct{ Events
// []json.RawMessage `json:"events"` } would (the key matched without
// regard to case, the last occurrence winning, null giving no events),
// except that the items are slices of body rather than copies, and that
// the body is validated once, not once more per event. ok is false
// exactly where that Unmarshal of bytes.TrimSpace(body) fails.
func SplitBatch(body []byte) (items []Item, ok bool) {
	// Ingest has always trimmed the body first (Unicode white space, so a
	// leading \v or U+00A0 is accepted too).
	body = bytes.TrimSpace(body)
	if !validJSON(body) {
		return nil, false
	}
	i := skipSpace(body, 0)
	switch body[i] {
	case '[':
		return splitArray(body, i), true
	case '{':
	case 'n': // null: Unmarshal leaves the struct as it is
		return nil, true
	default:
		return nil, false // a string, number or boolean
	}
	if i = skipSpace(body, i+1); body[i] == '}' {
		return nil, true
	}
	// Unmarshal goes on after a member of the wrong type and reports the
	// first such error at the end.
	typeErr := false
	for {
		end := skipValue(body, i)
		key, err := jsonString(body[i:end])
		if err != nil {
			return nil, false // not reached: a valid object's keys are strings
		}
		i = skipSpace(body, skipSpace(body, end)+1) // past the colon
		end = skipValue(body, i)
		if strings.EqualFold(key, "events") {
			switch body[i] {
			case '[':
				items = splitArray(body, i)
				if items == nil {
					items = []Item{} // "[]": an empty, non-nil slice
				}
			case 'n':
				items = nil
			default:
				typeErr = true
			}
		}
		if i = skipSpace(body, end); body[i] == '}' {
			break
		}
		i = skipSpace(body, i+1) // past the comma
	}
	if typeErr {
		return nil, false
	}
	return items, true
}

// splitArray returns the elements of the valid array starting at
// body[i], as valid items.
func splitArray(body []byte, i int) []Item {
	var items []Item
	if i = skipSpace(body, i+1); body[i] == ']' {
		return []Item{}
	}
	for {
		end := skipValue(body, i)
		items = append(items, Item{raw: body[i:end:end], valid: true})
		if i = skipSpace(body, end); body[i] == ']' {
			return items
		}
		i = skipSpace(body, i+1) // past the comma
	}
}
