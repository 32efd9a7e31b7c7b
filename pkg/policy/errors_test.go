package policy

import (
	"errors"

	"github.com/vigilhq/vigil/pkg/apperr"
)

func asAppErr(err error, target **apperr.Error) bool { return errors.As(err, target) }
