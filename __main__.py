"""inference-fleet: read the fleet spec from stack config, build its topology, export what users need.

`pulumi up` runs this file; so does the offline plan (`python -m fleet plan`), under mocks.
"""

import program

program.main()
