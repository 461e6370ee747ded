package compose

import (
	"io"
	"os"
	"testing"

	"github.com/sirupsen/logrus"
)

// compose-go logs warnings (an obsolete version key, an unset variable)
// through logrus; the tests do not need them.
func TestMain(m *testing.M) {
	logrus.SetOutput(io.Discard)
	os.Exit(m.Run())
}
