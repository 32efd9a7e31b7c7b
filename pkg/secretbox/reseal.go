package secretbox

import (
	"encoding/json"
	"fmt"
)

// ResealJSON re-encrypts the sealed value in field of the JSON object
// data, bound to ad, from old to next, leaving every other field as it is.
// It reports changed == false when there is nothing to do: the field is
// empty or absent, or the value already opens with next (a rotation that
// was interrupted and is run again). A value that opens with neither is
// ErrOpen.
func ResealJSON(data []byte, field, ad string, old, next *Box) (out []byte, changed bool, err error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, false, fmt.Errorf("secretbox: record: %w", err)
	}
	raw, ok := obj[field]
	if !ok {
		return data, false, nil
	}
	var sealed string
	if err := json.Unmarshal(raw, &sealed); err != nil {
		return nil, false, fmt.Errorf("secretbox: field %s: %w", field, err)
	}
	if sealed == "" {
		return data, false, nil
	}
	pt, err := old.Open(sealed, ad)
	if err != nil {
		if _, nerr := next.Open(sealed, ad); nerr == nil {
			return data, false, nil
		}
		return nil, false, fmt.Errorf("%w (field %s, %s)", ErrOpen, field, ad)
	}
	enc, err := json.Marshal(next.Seal(pt, ad))
	if err != nil {
		return nil, false, err
	}
	obj[field] = enc
	out, err = json.Marshal(obj)
	return out, err == nil, err
}
