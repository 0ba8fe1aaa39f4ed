"""The household world's vocabulary: rooms, receptacles, object classes, where objects tend to be,
and which objects each task type can use. The single source of truth for the environment, its
expert planner and the household skills (sdar/skills/texts/household/*.md describe these priors).

Location priors are weights over receptacle classes: an apple is placed in the fridge half the
time, on a countertop or the dining table otherwise. Episodes sample from these priors, so an
agent that knows them (a teacher given the skills) searches less than one that does not.
"""

from __future__ import annotations

# receptacle class -> (how many instances per room: min, max), openable
RECEPTACLES: dict[str, tuple[tuple[int, int], bool]] = {
    "fridge": ((1, 1), True),
    "microwave": ((1, 1), True),
    "sinkbasin": ((1, 2), False),
    "stoveburner": ((2, 4), False),
    "countertop": ((1, 3), False),
    "cabinet": ((2, 6), True),
    "drawer": ((2, 5), True),
    "shelf": ((1, 3), False),
    "diningtable": ((1, 1), False),
    "coffeetable": ((1, 1), False),
    "sidetable": ((1, 2), False),
    "desk": ((1, 1), False),
    "dresser": ((1, 1), False),
    "bed": ((1, 1), False),
    "sofa": ((1, 1), False),
    "garbagecan": ((1, 1), False),
    "desklamp": ((1, 1), False),
    "floorlamp": ((1, 1), False),
    "toilet": ((1, 1), False),
    "towelholder": ((1, 1), False),
}

# room -> receptacle classes present in it
ROOMS: dict[str, tuple[str, ...]] = {
    "kitchen": ("fridge", "microwave", "sinkbasin", "stoveburner", "countertop", "cabinet", "drawer",
                "shelf", "diningtable", "garbagecan"),
    "livingroom": ("sofa", "coffeetable", "sidetable", "shelf", "drawer", "cabinet", "floorlamp",
                   "garbagecan"),
    "bedroom": ("bed", "desk", "desklamp", "sidetable", "drawer", "shelf", "dresser", "garbagecan"),
    "bathroom": ("sinkbasin", "countertop", "cabinet", "toilet", "towelholder", "shelf", "garbagecan"),
}  # fmt: skip

# object class -> {receptacle class: weight}; objects only appear where their room has such receptacles
LOCATION_PRIORS: dict[str, dict[str, float]] = {
    "apple": {"fridge": 0.5, "countertop": 0.3, "diningtable": 0.2},
    "tomato": {"fridge": 0.6, "countertop": 0.2, "diningtable": 0.2},
    "potato": {"fridge": 0.4, "countertop": 0.3, "cabinet": 0.3},
    "egg": {"fridge": 0.8, "countertop": 0.2},
    "lettuce": {"fridge": 0.8, "countertop": 0.2},
    "bread": {"countertop": 0.5, "diningtable": 0.3, "cabinet": 0.2},
    "mug": {"cabinet": 0.4, "countertop": 0.3, "coffeetable": 0.1, "desk": 0.2},
    "cup": {"cabinet": 0.5, "countertop": 0.3, "diningtable": 0.2},
    "plate": {"cabinet": 0.6, "diningtable": 0.3, "countertop": 0.1},
    "bowl": {"cabinet": 0.5, "shelf": 0.2, "diningtable": 0.3},
    "pan": {"stoveburner": 0.6, "cabinet": 0.4},
    "pot": {"stoveburner": 0.5, "cabinet": 0.5},
    "knife": {"drawer": 0.6, "countertop": 0.4},
    "spoon": {"drawer": 0.7, "countertop": 0.2, "diningtable": 0.1},
    "fork": {"drawer": 0.7, "diningtable": 0.3},
    "soapbar": {"sinkbasin": 0.3, "countertop": 0.4, "cabinet": 0.3},
    "cloth": {"cabinet": 0.4, "countertop": 0.3, "towelholder": 0.3},
    "spraybottle": {"cabinet": 0.6, "toilet": 0.2, "countertop": 0.2},
    "toiletpaper": {"toilet": 0.4, "cabinet": 0.4, "shelf": 0.2},
    "book": {"shelf": 0.4, "desk": 0.3, "bed": 0.1, "sidetable": 0.1, "coffeetable": 0.1},
    "pen": {"desk": 0.5, "drawer": 0.4, "sidetable": 0.1},
    "pencil": {"desk": 0.5, "drawer": 0.5},
    "cd": {"shelf": 0.4, "drawer": 0.3, "desk": 0.3},
    "cellphone": {"bed": 0.3, "desk": 0.3, "sidetable": 0.2, "sofa": 0.2},
    "keychain": {"sidetable": 0.4, "drawer": 0.3, "dresser": 0.3},
    "creditcard": {"desk": 0.3, "drawer": 0.3, "sidetable": 0.2, "dresser": 0.2},
    "remotecontrol": {"sofa": 0.4, "coffeetable": 0.4, "sidetable": 0.2},
    "pillow": {"sofa": 0.6, "bed": 0.4},
    "alarmclock": {"sidetable": 0.5, "desk": 0.3, "dresser": 0.2},
    "watch": {"dresser": 0.4, "sidetable": 0.4, "drawer": 0.2},
    "vase": {"shelf": 0.5, "coffeetable": 0.3, "sidetable": 0.2},
    "statue": {"shelf": 0.6, "coffeetable": 0.2, "dresser": 0.2},
}

# task type -> the object classes it may ask for (and, per type, the appliance that does the work)
HEATABLE = ("apple", "tomato", "potato", "egg", "bread", "mug", "cup", "plate")
COOLABLE = ("apple", "tomato", "potato", "egg", "lettuce", "bread", "mug", "cup", "plate", "pan", "pot")
CLEANABLE = ("apple", "tomato", "potato", "lettuce", "mug", "cup", "plate", "bowl", "pan", "pot", "knife",
             "spoon", "fork", "cloth")  # fmt: skip
LIGHT_INSPECTABLE = ("book", "pen", "pencil", "cd", "cellphone", "keychain", "creditcard", "remotecontrol",
                     "alarmclock", "watch", "vase", "statue", "mug", "bowl", "pillow")  # fmt: skip

TASK_TYPES = ("pick_and_place", "pick_two", "clean", "heat", "cool", "look_at_obj_in_light")

APPLIANCE = {"clean": "sinkbasin", "heat": "microwave", "cool": "fridge"}
LAMPS = ("desklamp", "floorlamp")
