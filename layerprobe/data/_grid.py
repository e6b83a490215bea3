"""The organisms' image geometry, shared by their tasks (``data=organism``, ``data=scenes``): a 4x4
grid of 8 px cells in a 32 px image, so each cell is exactly one visual token of the organisms'
8 px-patch vision tower."""

GRID = 4
CELL_PX = 8
IMAGE_PX = GRID * CELL_PX
NUM_CELLS = GRID * GRID
