"""The pure core of prebuildd: types, rules and maths. No I/O, no asyncio, nothing else of the project."""
