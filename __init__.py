from . import models
from . import controllers
from . import cli
from . import wizards
