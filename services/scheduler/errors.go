package scheduler

import "fmt"

type errSlotHeld string

func (e errSlotHeld) Error() string { return fmt.Sprintf("job %s holds a slot already", string(e)) }

type errUnknownHost string

func (e errUnknownHost) Error() string { return fmt.Sprintf("host %q is not registered", string(e)) }
