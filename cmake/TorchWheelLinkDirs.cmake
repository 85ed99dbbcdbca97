# A pip-installed CUDA torch finds NCCL, cuDNN, ... in site-packages/nvidia/*/lib through
# its own RUNPATH; a linker resolving libtorch_cuda's dependencies must look there too,
# or it takes an older system NCCL and fails. Used by qccl's build and by its installed
# qcclConfig.cmake (for programs that link qccl::qccl). Needs find_package(Torch) first.
function(qccl_torch_wheel_link_options target scope)
  file(GLOB dirs LIST_DIRECTORIES true "${TORCH_INSTALL_PREFIX}/../nvidia/*/lib" "${TORCH_INSTALL_PREFIX}/../nvidia/*/*/lib")
  foreach(dir IN LISTS dirs)
    if(IS_DIRECTORY "${dir}")
      target_link_options(${target} ${scope} "LINKER:-rpath-link,${dir}")
    endif()
  endforeach()
endfunction()
