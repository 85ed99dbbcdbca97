#pragma once

// Stand-in (see the README of gloo_declarations): everything needed is in context.h.
#include <gloo/context.h>
