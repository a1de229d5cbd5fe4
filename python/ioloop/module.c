/* ioloop._ioloop: the module (types from handle.c and loop.c). */
#include "_ioloop.h"

static PyObject *version(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    (void)self;
    return PyUnicode_FromString(iol_version_string());
}

static PyMethodDef module_methods[] = {
    {"library_version", version, METH_NOARGS, "The libioloop version linked into the module."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ioloop._ioloop",
    .m_doc = "The native core of the ioloop asyncio event loop.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__ioloop(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    ioloop_format_helpers = PyImport_ImportModule("asyncio.format_helpers");
    if (!ioloop_format_helpers)
        goto fail;
    if (PyType_Ready(&Handle_Type) < 0 || PyType_Ready(&TimerHandle_Type) < 0)
        goto fail;
    if (PyModule_AddObjectRef(m, "Handle", (PyObject *)&Handle_Type) < 0 ||
        PyModule_AddObjectRef(m, "TimerHandle", (PyObject *)&TimerHandle_Type) < 0)
        goto fail;
    if (ioloop_init_loop_type(m) < 0 || ioloop_init_transport_type(m) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
