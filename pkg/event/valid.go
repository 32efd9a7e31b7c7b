package event

// maxDepth is encoding/json's nesting limit: a document nested deeper is
// not valid to json.Valid.
const maxDepth = 10000

// validJSON reports json.Valid(data), in one plain byte scan: ingest
// validates every batch body (and every single event) with it, and
// encoding/json's scanner, a function call per byte, cost about a tenth
// of the batch handler's CPU. valid_test.go checks the equivalence by
// table and by fuzzing.
func validJSON(data []byte) bool {
	var buf [64]byte
	stack := buf[:0] // '{' or '[' per open container
	i := 0
	for {
		// A value starts at i, after white space.
		if i = skipSpace(data, i); i >= len(data) {
			return false
		}
		switch c := data[i]; c {
		case '{', '[':
			if len(stack) == maxDepth {
				return false
			}
			stack = append(stack, c)
			if i = skipSpace(data, i+1); i < len(data) && data[i] == c+2 { // '}' or ']'
				stack = stack[:len(stack)-1]
				i++
				break
			}
			if c == '{' {
				if i = scanKey(data, i); i < 0 {
					return false
				}
			}
			continue
		case '"':
			i = scanString(data, i)
		case 't':
			i = scanLiteral(data, i, "true")
		case 'f':
			i = scanLiteral(data, i, "false")
		case 'n':
			i = scanLiteral(data, i, "null")
		default:
			i = scanNumber(data, i)
		}
		if i < 0 {
			return false
		}
		// After a value: close containers, or go on to the next element.
	next:
		for {
			i = skipSpace(data, i)
			if len(stack) == 0 {
				return i == len(data)
			}
			if i >= len(data) {
				return false
			}
			top := stack[len(stack)-1]
			switch data[i] {
			case ',':
				i++
				if top == '{' {
					if i = scanKey(data, skipSpace(data, i)); i < 0 {
						return false
					}
				}
				break next
			case top + 2:
				stack = stack[:len(stack)-1]
				i++
			default:
				return false
			}
		}
	}
}

// scanKey scans an object key at data[i] and the colon after it, and
// returns the index past the colon, or -1.
func scanKey(data []byte, i int) int {
	if i >= len(data) || data[i] != '"' {
		return -1
	}
	if i = scanString(data, i); i < 0 {
		return -1
	}
	if i = skipSpace(data, i); i >= len(data) || data[i] != ':' {
		return -1
	}
	return i + 1
}

// scanString returns the index past the string literal at data[i] (a
// '"'), or -1. Like encoding/json it refuses control characters and
// unknown escapes, and lets any other byte through (invalid UTF-8
// included).
func scanString(data []byte, i int) int {
	for i++; i < len(data); i++ {
		switch c := data[i]; {
		case c == '"':
			return i + 1
		case c < 0x20:
			return -1
		case c == '\\':
			if i++; i >= len(data) {
				return -1
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(data) {
					return -1
				}
				for _, h := range data[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return -1
					}
				}
				i += 4
			default:
				return -1
			}
		}
	}
	return -1
}

func scanLiteral(data []byte, i int, lit string) int {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// scanNumber returns the index past the number at data[i], or -1:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(data []byte, i int) int {
	digits := func() bool {
		start := i
		for i < len(data) && '0' <= data[i] && data[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(data) && data[i] == '-' {
		i++
	}
	switch {
	case i >= len(data):
		return -1
	case data[i] == '0':
		i++
	case '1' <= data[i] && data[i] <= '9':
		digits()
	default:
		return -1
	}
	if i < len(data) && data[i] == '.' {
		i++
		if !digits() {
			return -1
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		if i++; i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if !digits() {
			return -1
		}
	}
	return i
}
