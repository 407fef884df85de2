"""The filesystem layer: manifests read from files and directories, the CRD files written."""
