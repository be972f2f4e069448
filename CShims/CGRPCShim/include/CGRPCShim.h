#ifndef CGRPCSHIM_H
#define CGRPCSHIM_H
#include <grpc/grpc.h>
#endif
